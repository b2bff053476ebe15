from django.conf import settings
from django.db import models

from core.models import Blog, Country


class BlogView(models.Model):
    """One page view: the raw, append-only fact every summary is computed from.

    The foreign keys carry no database constraint: ingest validates a whole batch's blog ids and
    country codes with one query each, and per-row constraint triggers would cost the write path
    about 3.4x (the README's "Design" section). Django's automatic single-column indexes are off
    for the same reason; ``(blog, viewed_at)`` serves lookups by blog.
    """

    blog = models.ForeignKey(
        Blog, on_delete=models.PROTECT, db_constraint=False, db_index=False, related_name="views"
    )
    country = models.ForeignKey(
        Country, on_delete=models.PROTECT, db_constraint=False, db_index=False, related_name="+"
    )
    viewed_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["viewed_at"], name="blogview_viewed_at"),
            models.Index(fields=["blog", "viewed_at"], name="blogview_blog_viewed_at"),
        ]

    def __str__(self) -> str:
        return f"blog {self.blog_id} from {self.country_id} at {self.viewed_at:%Y-%m-%d %H:%M}"


class IdempotencyKey(models.Model):
    """The first answer to an ingest request sent with an ``Idempotency-Key`` header.

    Written in the same transaction as the views it answers for, so that a key exists exactly
    when its views do. ``(user, key)`` is unique: a concurrent request with the same key waits for
    the first one's transaction and then finds its answer. Rows older than the replay window count
    as unused and are deleted by a periodic task, which the ``created_at`` index keeps cheap.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        # The unique (user, key) index leads with the user and serves lookups by user.
        db_index=False,
        related_name="+",
    )
    key = models.CharField(max_length=255)
    request_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the request body as canonical JSON."
    )
    status = models.PositiveSmallIntegerField(help_text="HTTP status of the first answer.")
    body = models.JSONField(help_text="Body of the first answer.")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotencykey_user_key"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotencykey_created_at")]

    def __str__(self) -> str:
        return f"{self.key} (user {self.user_id}, {self.created_at:%Y-%m-%d %H:%M})"
