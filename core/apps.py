from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _countries_restore(sender: AppConfig, **kwargs: Any) -> None:
    # The migration loads them; this puts them back after a database flush (which, like
    # migrate, ends with post_migrate), as Django does for content types and permissions.
    from core.countries import countries_ensure
    from core.models import Country

    countries_ensure(Country, using=kwargs.get("using", "default"))


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from core.throttling import login_failed_receiver

        post_migrate.connect(_countries_restore, sender=self)
        # Every failed authenticate() (API token, admin login) counts toward the sign-in limits.
        user_login_failed.connect(login_failed_receiver, dispatch_uid="core.login_throttle")
