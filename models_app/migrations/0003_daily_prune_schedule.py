from django.db import migrations


def add_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="modelyard-prune",
        defaults={"func": "models_app.tasks.prune", "schedule_type": "D", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="modelyard-prune").delete()


class Migration(migrations.Migration):
    dependencies = [("models_app", "0002_reaper_schedule")]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
