from django.apps import AppConfig


class ChecklistsConfig(AppConfig):
    name = "checklists"
    default_auto_field = "django.db.models.BigAutoField"
