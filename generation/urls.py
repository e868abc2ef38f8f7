from __future__ import annotations

from django.urls import path

from generation import apis, price_apis

urlpatterns = [
    path("images/", apis.ImageCreateApi.as_view(), name="image-create"),
    path("videos/", apis.VideoCreateApi.as_view(), name="video-create"),
    path("jobs/", apis.JobListApi.as_view(), name="job-list"),
    path("jobs/<uuid:job_id>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("generations/", apis.GenerationListApi.as_view(), name="generation-list"),
    path("prices/", price_apis.PriceListApi.as_view(), name="prices"),
    path("quotes/", price_apis.QuoteApi.as_view(), name="quotes"),
]
