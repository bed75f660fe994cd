from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from guardian.admin import GuardedModelAdmin

from accounts.models import Team, User


@admin.register(User)
class PullboardUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Pullboard", {"fields": ("time_zone",)}))


@admin.register(Team)
class TeamAdmin(GuardedModelAdmin):
    list_display = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
