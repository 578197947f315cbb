"""python -m services.channels: serve the channels service."""

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from shared.service import serve

if __name__ == "__main__":
    serve(create_app, ChannelsSettings())
