from django.db import migrations


def add_schedule(apps, schema_editor):
    # Every 15 minutes; the task checks only the entries whose last check is older than
    # UPDATE_CHECK_INTERVAL (weekly by default, 0 turns it off), so the setting needs no
    # migration of its own.
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="modelyard-update-check",
        defaults={
            "func": "models_app.tasks.update_check",
            "schedule_type": "I",
            "minutes": 15,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="modelyard-update-check").delete()


class Migration(migrations.Migration):
    dependencies = [("models_app", "0009_custom_import_verify_update_export")]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
