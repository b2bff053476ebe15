from django.db import models

from core.models import Blog, Country


class BlogView(models.Model):
    """One page view: the raw, append-only fact every summary is computed from.

    The foreign keys carry no database constraint: ingest validates a whole batch's blog ids and
    country codes with one query each, and per-row constraint triggers would cost the write path
    about 3x (measured in DESIGN.md). Django's automatic single-column indexes are off for the same
    reason; ``(blog, viewed_at)`` serves lookups by blog.
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
