"""python -m services.intake: serve the intake service."""

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.service import serve

if __name__ == "__main__":
    serve(create_app, IntakeSettings())
