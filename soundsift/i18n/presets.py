"""Named label sets shipped with soundsift, each in English and Chinese ("<name>" and "<name>_zh")."""

from __future__ import annotations

PRESETS: dict[str, str] = {
    "smart_home": "glass breaking, smoke alarm, dog barking, baby crying, door knock, doorbell, speech, silence",
    "office": "keyboard typing, phone ringing, printer, speech, door closing, footsteps, air conditioner",
    "street": "car horn, siren, engine idling, footsteps, bicycle bell, speech, construction drilling",
    "nature": "birds chirping, rain, thunder, wind, water stream, insects buzzing, frog croaking",
    "moderation": "gunshot, explosion, screaming, crying, shouting, music, speech, laughter",
    "classroom": "teacher speaking, children talking, children laughing, applause, chair moving, writing, silence",
}

PRESETS_ZH: dict[str, str] = {
    "smart_home": "玻璃破碎声, 烟雾报警声, 狗叫声, 婴儿哭声, 敲门声, 门铃声, 说话声, 安静",
    "office": "打字声, 电话铃声, 打印机, 说话声, 关门声, 脚步声, 空调声",
    "street": "汽车喇叭, 警笛声, 发动机怠速, 脚步声, 自行车铃, 说话声, 电钻",
    "nature": "鸟叫声, 雨声, 雷声, 风声, 流水声, 虫鸣, 蛙鸣",
    "moderation": "枪声, 爆炸声, 尖叫声, 哭声, 喊叫声, 音乐, 说话声, 笑声",
    "classroom": "讲话声, 小孩说话, 孩子笑声, 掌声, 挪椅子, 写字声, 安静",
}


def preset_names() -> list[str]:
    return [*PRESETS, *(f"{name}_zh" for name in PRESETS_ZH)]


def preset_labels(name: str) -> str:
    """The comma-separated labels of a preset; KeyError (with the known names) for others."""
    if name in PRESETS:
        return PRESETS[name]
    if name.endswith("_zh") and name[:-3] in PRESETS_ZH:
        return PRESETS_ZH[name[:-3]]
    raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
