"""ASGI entry point: uvicorn serves the API, the admin and the event stream from here."""

from __future__ import annotations

import gc
import os
import sys
from importlib import import_module
from typing import Any

import django
from django.conf import settings
from django.utils.module_loading import import_string

from project.handler import RequestThreadsASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# How often CPython offers the interpreter lock to another thread. A request's thread coming back from a database or
# Redis round trip waits for the lock while another request runs Python, by default up to 5 ms each time: with two
# requests overlapping, a request of ten round trips could wait tens of ms. At 1 ms, 100 image requests/s on two
# processes gave p99 18 to 28 ms against 28 to 42 ms (docs/benchmarks.md).
WEB_SWITCH_INTERVAL_SECONDS = 0.001

django.setup(set_prefix=False)
sys.setswitchinterval(WEB_SWITCH_INTERVAL_SECONDS)
application: Any = RequestThreadsASGIHandler()
# ASGI middleware around Django, named in the settings as Django's own middleware is (the first is outermost).
for wrapper in reversed(settings.ASGI_MIDDLEWARE):
    application = import_string(wrapper)(application)

# Import every view now rather than on the first request, then take the objects that live as long as the process
# (modules, classes, the URLconf: over 100,000 of them) out of the garbage collector's sight. Left in, each full
# collection walks them all and stalls every request of the process for about 65 ms; frozen, it takes under 10 ms.
import_module(settings.ROOT_URLCONF)
gc.freeze()
