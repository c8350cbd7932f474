"""Ready-made label sets offered by the web page."""

from __future__ import annotations

PRESETS: dict[str, str] = {
    "smart_home": "glass breaking, smoke alarm, dog barking, baby crying, door knock, doorbell, speech, silence",
    "office": "keyboard typing, phone ringing, printer, speech, door closing, footsteps, air conditioner",
    "street": "car horn, siren, engine idling, footsteps, bicycle bell, speech, construction drilling",
    "nature": "birds chirping, rain, thunder, wind, water stream, insects buzzing, frog croaking",
}
