"""The published FCN weights fcnseg knows by name, with where each fact comes from.

- ``torchvision/…``: torchvision's ``FCN_ResNet50_Weights`` / ``FCN_ResNet101_Weights``
  (``COCO_WITH_VOC_LABELS_V1``; torchvision/models/segmentation/fcn.py): URL, the SHA-256
  prefix in the file name, metrics on COCO val2017 restricted to the 20 VOC categories, file
  size (``_file_size``, MB). Licence: torchvision's BSD-3-Clause (trained on COCO).
- ``reference/…``: the reference Caffe models (shelhamer/fcn.berkeleyvision.org, whose README
  gives the mean IU on seg11valid and the licence: BSD-2 code, "unrestricted use" models) as
  converted to PyTorch by pytorch-fcn (wkentaro/pytorch-fcn, ``torchfcn/models/fcn32s.py``,
  ``fcn16s.py``, ``fcn8s.py`` at commit 1f1a7f3c: Google-Drive URLs and MD5 sums).
"""

from __future__ import annotations

from fcnseg.data.palettes import VOC_CLASSES, VOC_PALETTE
from fcnseg.download import Checksum
from fcnseg.models.pretrained.layouts import REFERENCE, TORCHVISION
from fcnseg.models.pretrained.registry import PretrainedWeights, Published, register_pretrained

__all__: list[str] = []

_TV_PAGE = "https://docs.pytorch.org/vision/stable/models/fcn.html"
_TV_METRICS = "torchvision FCN_ResNet{}_Weights.COCO_WITH_VOC_LABELS_V1.meta['_metrics']"
_COCO_VOC = "COCO val2017, the 20 VOC categories"

for depth, digest, miou, acc, size in ((50, "1167a1af", 60.5, 91.4, 135.009),
                                       (101, "7ecb50ca", 63.7, 91.9, 207.711)):  # fmt: skip
    filename = f"fcn_resnet{depth}_coco-{digest}.pth"
    register_pretrained(
        PretrainedWeights(
            name=f"torchvision/fcn_resnet{depth}_coco",
            url=f"https://download.pytorch.org/models/{filename}",
            checksum=Checksum("sha256", digest),
            filename=filename,
            layout=TORCHVISION.name,
            model={"name": "fcn_resnet", "num_classes": 21, "depth": depth, "aux": False},
            classes=VOC_CLASSES,
            palette=VOC_PALETTE,
            preprocess=TORCHVISION.preprocess,
            published=Published(miou, _COCO_VOC, _TV_METRICS.format(depth), pixel_accuracy=acc),
            licence="BSD-3-Clause (torchvision); trained on COCO",
            page=_TV_PAGE,
            size_mb=size,
        )
    )

_REF_README = "https://github.com/shelhamer/fcn.berkeleyvision.org#readme"
_REF_LICENCE = "BSD-2-Clause code, models for unrestricted use (BVLC model license)"
_SEG11 = "PASCAL VOC 2011 seg11valid"
_DRIVE = (
    "Google Drive may answer a script with a confirmation page for files this large: open the "
    "URL in a browser"
)

for net, drive_id, md5, miou, at_once in (
    ("fcn32s", "0B9P1L--7Wd2vM2oya3k0Zlgtekk", "8acf386d722dc3484625964cbe2aba49", 63.6, False),
    ("fcn16s", "0B9P1L--7Wd2vVGE3TkRMbWlNRms", "991ea45d30d632a01e5ec48002cac617", 65.0, False),
    ("fcn8s", "0B9P1L--7Wd2vT0FtdThWREhjNkU", "dbd9bbb3829a3184913bccc74373afbb", 65.5, False),
    ("fcn8s-atonce", "0B9P1L--7Wd2vblE1VUIxV1o2d2M", "bfed4437e941fef58932891217fe6464", 65.4,
     True),
):  # fmt: skip
    model = {"name": net.split("-")[0], "backbone": "vgg16", "num_classes": 21, "mode": "caffe",
             "learnable_upsampling": False}  # fmt: skip
    if at_once:
        model["at_once"] = True
    caffemodel = "fcn8s-atonce-pascal" if at_once else f"{net}-heavy-pascal"
    register_pretrained(
        PretrainedWeights(
            name=f"reference/{net}_voc",
            url=f"http://drive.google.com/uc?id={drive_id}",
            checksum=Checksum("md5", md5),
            filename=f"{net}_from_caffe.pth",
            layout=REFERENCE.name,
            model=model,
            classes=VOC_CLASSES,
            palette=VOC_PALETTE,
            preprocess=REFERENCE.preprocess,
            published=Published(miou, _SEG11, _REF_README),
            licence=_REF_LICENCE,
            page="https://github.com/wkentaro/pytorch-fcn",
            origin=f"http://dl.caffe.berkeleyvision.org/{caffemodel}.caffemodel",
            note=_DRIVE,
        )
    )
