import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

django_application = get_wsgi_application()

from core.middleware import ChunkedBodyMiddleware  # noqa: E402  (after Django is set up)

application = ChunkedBodyMiddleware(django_application)
