from django.conf import settings
from django.db import models
from django.utils import timezone


class Country(models.Model):
    """An ISO 3166-1 alpha-2 country, plus ``ZZ`` for views whose country is unknown."""

    UNKNOWN = "ZZ"

    code = models.CharField(max_length=2, primary_key=True)
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "countries"

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"


class Blog(models.Model):
    """A blog on the platform. Its author is a user; ``created_at`` is settable for imports."""

    title = models.CharField(max_length=200)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="blogs"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title


class ThrottleCounter(models.Model):
    """A counter shared by every process, for when there is no Redis (see ``core.cache``).

    Throttles count in a fixed window; without Redis the cache is per process, so each gunicorn
    worker would count on its own and the limit would multiply by the number of workers.
    """

    key = models.CharField(max_length=255, primary_key=True)
    count = models.BigIntegerField()
    # Unix time after which the counter is gone (and may be deleted).
    expires_at = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}={self.count}"
