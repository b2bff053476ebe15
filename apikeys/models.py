from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiKey(AbstractAPIKey):
    """A long-lived key for a server-to-server client: ``Authorization: Api-Key <secret>``.

    djangorestframework-api-key provides the rest: ``prefix`` (the key's public first 8
    characters), ``hashed_key`` (SHA-512 of the whole key; the secret itself is never stored and
    is shown once, when the key is created), ``name``, ``created``, ``expiry_date`` (empty =
    never) and ``revoked`` (cannot be undone).
    """

    class Scope(models.TextChoices):
        READ = "read", "read"
        INGEST = "ingest", "ingest"
        INGEST_READ = "ingest+read", "ingest and read"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text=(
            "The account the key acts for. Its ingest stores Idempotency-Keys as this user's, "
            "and it may ingest only while this user may (staff or the ingest.add_blogview "
            "permission). A key of an inactive user is refused."
        ),
    )
    scope = models.CharField(
        max_length=16,
        choices=Scope.choices,
        default=Scope.READ,
        help_text="What the key may do: read the analytics, ingest views, or both.",
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text=(
            "Read keys only: every analytics answer covers this author's blogs only; a request "
            "naming another author_username is refused (403). Empty = every author."
        ),
    )
    last_used_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Last request authenticated with the key (written at most once a minute).",
    )

    class Meta(AbstractAPIKey.Meta):
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scope__in=["read", "ingest", "ingest+read"]),
                name="apikey_scope_known",
            ),
            models.CheckConstraint(
                condition=models.Q(author__isnull=True) | models.Q(scope="read"),
                name="apikey_author_read_only",
            ),
        ]

    def clean(self) -> None:
        super().clean()
        if self.author_id is not None and self.scope != self.Scope.READ:
            raise ValidationError(
                {"author": "Only a read key may be restricted to an author (its scope: read)."}
            )
