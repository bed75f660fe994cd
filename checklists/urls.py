from django.urls import path

from checklists import views

app_name = "checklists"
urlpatterns = [
    path("", views.runbook_list, name="runbook_list"),
    path("import/", views.runbook_import, name="runbook_import"),
    path("<int:runbook_id>/", views.runbook_detail, name="runbook"),
]
