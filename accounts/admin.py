from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from guardian.admin import GuardedModelAdmin

from accounts.models import ApiToken, Team, User


@admin.register(User)
class PullboardUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Pullboard", {"fields": ("time_zone",)}))


@admin.register(Team)
class TeamAdmin(GuardedModelAdmin):
    list_display = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Lists tokens and revokes them (delete). They are created with the create_api_token
    command, the one place that can show a new token."""

    list_display = ("name", "user", "created_at", "last_used_at")
    list_select_related = ("user",)
    search_fields = ("name", "user__username")
    readonly_fields = ("user", "name", "created_at", "last_used_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
