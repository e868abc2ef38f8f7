"""ASGI entry point: uvicorn serves the API, the admin and the event stream from here."""

from __future__ import annotations

import gc
import os
from importlib import import_module
from typing import Any

import django
from django.conf import settings
from django.utils.module_loading import import_string

from project.handler import RequestThreadsASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django.setup(set_prefix=False)
application: Any = RequestThreadsASGIHandler()
# ASGI middleware around Django, named in the settings as Django's own middleware is (the first is outermost).
for wrapper in reversed(settings.ASGI_MIDDLEWARE):
    application = import_string(wrapper)(application)

# Import every view now rather than on the first request, then take the objects that live as long as the process
# (modules, classes, the URLconf: over 100,000 of them) out of the garbage collector's sight. Left in, each full
# collection walks them all and stalls every request of the process for about 65 ms; frozen, it takes under 10 ms.
import_module(settings.ROOT_URLCONF)
gc.freeze()
