"""Class names and colour palettes of the supported datasets (index ``i`` ↔ class ``i``).

Palettes are tuples of ``(r, g, b)`` uint8 triples, one per class, for visualisation and for
converting colour masks (:func:`fcnseg.data.io.colors_to_indices`). The ignore label (255) has no
entry; VOC draws it as ``voc_colormap()[255] == (224, 224, 192)``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CAMVID_VOID",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAINID",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_PALETTE",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "CityscapesLabel",
    "Palette",
    "default_palette",
    "voc_colormap",
]

Color = tuple[int, int, int]
Palette = tuple[Color, ...]


def voc_colormap(n: int = 256) -> Palette:
    """The PASCAL VOC devkit colour map (``labelcolormap.m``): the bits of index ``i`` are spread
    over the high bits of r, g, b, three at a time (``bitget``). Distinct for ``n ≤ 2**24``."""
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def default_palette(n: int) -> Palette:
    """A deterministic palette of ``n`` distinct colours for generic data (the VOC colour map:
    0 is black, then maroon, green, olive, navy, …)."""
    return voc_colormap(n)


# --- PASCAL VOC ---------------------------------------------------------------------------

#: The 20 VOC object classes plus background, in label order (devkit names).
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_PALETTE: Palette = voc_colormap(len(VOC_CLASSES))

# --- CamVid (SegNet 11-class version) -----------------------------------------------------

#: SegNet's 11 CamVid classes; label 11 in the SegNet annotations is "void" (→ ignore).
CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Sidewalk",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
#: SegNet tutorial colours (void, label 11, is drawn black).
CAMVID_PALETTE: Palette = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
#: The raw "void / unlabelled" value in SegNet's CamVid annotations.
CAMVID_VOID = 11

# --- Cityscapes ---------------------------------------------------------------------------


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    color: Color


#: ``cityscapesscripts/helpers/labels.py``: every labelId with its trainId (255 = ignored).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, (119, 11, 32)),
    CityscapesLabel("license plate", -1, 255, (0, 0, 142)),  # trainId -1 upstream; never in PNGs
)
#: labelId (0..33) → trainId (0..18, or 255 for classes not evaluated).
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    label.id: label.train_id for label in CITYSCAPES_LABELS if label.id >= 0
}
_TRAIN = sorted((lb for lb in CITYSCAPES_LABELS if lb.train_id != 255), key=lambda lb: lb.train_id)
#: The 19 evaluated classes in trainId order, with their official colours.
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lb.name for lb in _TRAIN)
CITYSCAPES_PALETTE: Palette = tuple(lb.color for lb in _TRAIN)

# --- ADE20K (SceneParsing 150) ------------------------------------------------------------

#: The 150 SceneParsing classes in ``objectInfo150`` order (first name of each entry); raw
#: annotation value ``k`` (1..150) is class ``k - 1``, 0 is "other".
ADE20K_CLASSES: tuple[str, ...] = (
    *("wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane"),
    *("grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant"),
    *("curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror"),
    *("rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp"),
    *("bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers"),
    *("counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand"),
    *("path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway"),
    *("river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book"),
    *("hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer"),
    *("swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light"),
    *("truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver"),
    *("airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman"),
    *("bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt"),
    *("canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket"),
    *("waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank"),
    *("trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen"),
    *("blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan"),
    *("pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass"),
    *("clock", "flag"),
)
#: The palette common in SceneParsing tools (CSAIL ``color150`` / mmsegmentation). Note that
#: (140, 140, 140) appears twice (road and skyscraper), as upstream.
ADE20K_PALETTE: Palette = (
    *((120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3)),
    *((120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7)),
    *((224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51)),
    *((255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3)),
    *((0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71)),
    *((255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255)),
    *((8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10)),
    *((7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7)),
    *((255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255)),
    *((235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15)),
    *((20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0)),
    *((0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255)),
    *((11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112)),
    *((0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0)),
    *((0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173)),
    *((10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255)),
    *((255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184)),
    *((0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194)),
    *((0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255)),
    *((0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0)),
    *((143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170)),
    *((133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255)),
    *((0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255)),
    *((70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163)),
    *((255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235)),
    *((245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0)),
    *((0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255)),
    *((0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255)),
    *((71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0)),
    *((0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255)),
)
