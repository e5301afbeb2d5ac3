"""Class lists and palettes for semantic packages (docs/spec/datasets.md §11.1)."""

from __future__ import annotations

# AVSS: model channel j = label2idx value - 1; background first, then alphabetical.
AVSS_LABELS = (
    "background", "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat", "boy",
    "bus", "car", "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey", "drum",
    "duck", "elephant", "emergency-car", "erhu", "flute", "frying-food", "girl", "goose", "guitar", "gun",
    "guzheng", "hair-dryer", "handpan", "harmonica", "harp", "helicopter", "hen", "horse", "keyboard", "leopard",
    "lion", "man", "marimba", "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig", "pipa",
    "saw", "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank", "tiger", "tractor",
    "train", "trombone", "truck", "trumpet", "tuba", "ukulele", "utv", "vacuum-cleaner", "violin", "wolf",
    "woman",
)


def voc_palette(n: int) -> list[list[int]]:
    """PASCAL-VOC bit-interleaved colormap, as AVSBench's get_v2_pallete builds it.

    Class j's 3-bit groups (j >> 3i) put bits 0, 1, 2 into R, G, B at bit 7 - i.
    """
    out = []
    for j in range(n):
        rgb = [0, 0, 0]
        c, i = j, 0
        while c:
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - i)
            c >>= 3
            i += 1
        out.append(rgb)
    return out


def avss_output() -> dict:
    """The manifest `output` block of an AVSS (71-class) package."""
    return {"kind": "semantic", "labels": list(AVSS_LABELS), "palette": voc_palette(len(AVSS_LABELS))}
