from django.urls import path

app_name = "board"
urlpatterns: list = []
