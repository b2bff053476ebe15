from typing import Any

from django.apps import AppConfig
from django.core.signals import request_finished
from django.db.models.signals import post_migrate


def _countries_restore(sender: AppConfig, **kwargs: Any) -> None:
    # The migration loads them; this puts them back after a database flush (which, like
    # migrate, ends with post_migrate), as Django does for content types and permissions.
    from core.countries import countries_ensure
    from core.models import Country

    countries_ensure(Country, using=kwargs.get("using", "default"))


def _request_id_clear(sender: object, **kwargs: Any) -> None:
    # A request's id stays on the log lines until its response is closed (RequestIdMiddleware);
    # the thread's next request sets its own.
    from core.logs import request_id_var

    request_id_var.set(None)


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from core.throttling import login_failed_receiver

        post_migrate.connect(_countries_restore, sender=self)
        request_finished.connect(_request_id_clear, dispatch_uid="core.request_id_clear")
        # Every failed authenticate() (API token, admin login) counts toward the sign-in limits.
        user_login_failed.connect(login_failed_receiver, dispatch_uid="core.login_throttle")
