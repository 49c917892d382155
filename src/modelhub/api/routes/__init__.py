"""One router per endpoint group; ``modelhub.api.app`` mounts them."""
