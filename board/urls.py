from django.urls import path, re_path

from board import views

app_name = "board"
urlpatterns = [
    path("", views.board, name="board"),
    path("claim-next/", views.claim_next, name="claim_next"),
    path("items/<int:item_id>/claim/", views.item_claim, name="item_claim"),
    path("items/<int:item_id>/complete/", views.item_complete, name="item_complete"),
    path("items/<int:item_id>/abandon/", views.item_abandon, name="item_abandon"),
    path("items/<int:item_id>/extend/", views.item_extend, name="item_extend"),
    path("items/<int:item_id>/requeue/", views.item_requeue, name="item_requeue"),
    path("items/<int:item_id>/skip/", views.item_skip, name="item_skip"),
    path("items/<int:item_id>/assign/", views.item_assign, name="item_assign"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.launch, name="launch"),
    path("runs/new/recommendation/", views.launch_recommendation,
         name="launch_recommendation"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/reassign/", views.run_reassign, name="run_reassign"),
    path("runs/<int:run_id>/restart/", views.run_restart, name="run_restart"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    re_path(
        r"^runs/(?P<run_id>[0-9]+)/trail\.(?P<fmt>csv|jsonl)$",
        views.trail_export,
        name="trail_export",
    ),
]
