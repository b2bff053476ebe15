from django.contrib import admin

from core.models import Blog, Country


@admin.register(Country)
class CountryAdmin(admin.ModelAdmin):
    list_display = ["code", "name"]
    search_fields = ["code", "name"]


@admin.register(Blog)
class BlogAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "author", "created_at"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    autocomplete_fields = ["author"]
    date_hierarchy = "created_at"
