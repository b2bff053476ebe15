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
