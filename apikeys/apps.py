from django.apps import AppConfig


class ApiKeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from apikeys.models import ApiKey
        from apikeys.services import api_key_forget, api_keys_of_user_forget

        # A key edited, revoked or deleted (in the admin or anywhere) stops being served from
        # the cache at once; so do the keys of a user whose account changed (deactivated,
        # renamed: a key restricted to an author names the author by username).
        post_save.connect(api_key_forget, sender=ApiKey, dispatch_uid="apikeys.saved")
        post_delete.connect(api_key_forget, sender=ApiKey, dispatch_uid="apikeys.deleted")
        post_save.connect(
            api_keys_of_user_forget, sender=get_user_model(), dispatch_uid="apikeys.user_saved"
        )
