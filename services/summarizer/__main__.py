"""python -m services.summarizer: serve the summarizer service."""

from services.summarizer.app import create_app
from services.summarizer.settings import SummarizerSettings
from shared.service import serve

if __name__ == "__main__":
    serve(create_app, SummarizerSettings())
