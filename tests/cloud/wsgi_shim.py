"""gunicorn entry point for the OpenStack WSGI apps of the local test cloud.

Keystone and Nova parse sys.argv with oslo.config when their WSGI module is
imported; under gunicorn that would see gunicorn's own arguments. Clear them,
then import the app named by NLM_WSGI_APP ("module:attribute").
"""

import importlib
import os
import sys

sys.argv = sys.argv[:1]
_module, _attr = os.environ["NLM_WSGI_APP"].split(":")
application = getattr(importlib.import_module(_module), _attr)
