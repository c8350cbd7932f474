"""The HTTP API, one router per concern; soundsift.serving.app includes them."""
