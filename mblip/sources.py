"""The paper preset's inputs as data: every public file `mblip fetch` downloads, and the ones it cannot.

One `Source` per file (or per folder the user must provide). ``dest`` is relative to the paper data
root (``data/paper/``); `mblip.download.fetch_all` downloads, verifies, unpacks and reports on them.

Where the URLs come from (nothing here is guessed; ``url=None`` + ``note`` where no stable public URL
is known):

* XM3600, MaXM, GQA images: ``reference/eval-suite.md`` §2, §3, §6.2.
* IGLUE text (xGQA, XVNLI, MaRVL, NLVR2, xFlickrCO, GQA train, Flickr30k): ``github.com/e-bug/iglue``
  ``datasets/``, served raw from its ``main`` branch (eval-suite §3–§6, §11). The Flickr30k
  ``{train,valid,test}_ann.jsonl`` paths are the ones the authors' ``data/flickr/generate_flickr.py`` reads.
* POPE: ``github.com/AoiDragon/POPE`` ``output/coco/`` pinned to commit ``e3e3926`` (the revision the
  LLaVA-1.5 evaluation docs pin; eval-suite §7).
* Task-mix sources (protocol §6, data/README.md of the authors): COCO 2014 images + Karpathy split
  (``caption_datasets.zip`` holds ``dataset_coco.json``), VQAv2 train/val, A-OKVQA v1.0, LLaVA-Instruct-150K,
  BLIP Web CapFilt, Babel-ImageNet labels; the authors' released files ``Gregor/mblip-train`` (protocol §14).
* ImageNet-1k, Flickr30k, MaRVL and NLVR2 images: licence forms or logins, so the user provides the folder.

``required_for`` tags say what a file is for; ``mblip fetch --only TAG`` (``sources.select``) fetches just
that. Benchmarks: ``xm3600 xgqa xvnli marvl xflickrco maxm pope chair vqav2 coco``. Fine-tuning (English
train/dev, protocol §8.4): ``finetune-xgqa finetune-xvnli finetune-marvl finetune-flickr``. Training data:
``taskmix`` (English sources the pipeline translates itself), ``taskmix-released`` (the authors' translated
files, the shortcut), ``webcapfilt-images`` (the URL list for `download.download_images`).

Checksums are unknown here (no network when this was written): ``sha256=None`` means trust on first use,
recorded in ``data/paper/CHECKSUMS.sha256`` and verified on every later run.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Literal

KINDS = ("annotation", "images", "model-data")
UNPACK = (None, "zip", "tgz")
TAGS = ("xm3600", "xgqa", "xvnli", "marvl", "xflickrco", "maxm", "pope", "chair", "vqav2", "coco",
        "finetune-xgqa", "finetune-xvnli", "finetune-marvl", "finetune-flickr",
        "taskmix", "taskmix-released", "webcapfilt-images")

# Benchmark language tables (eval-suite §0): which per-language files exist upstream.
XGQA_LANGS = ("bn", "de", "en", "id", "ko", "pt", "ru", "zh")
XVNLI_LANGS = ("ar", "es", "fr", "ru", "en")
MARVL_LANGS = ("id", "sw", "ta", "tr", "zh")
XFLICKRCO_LANGS = ("de", "en", "es", "id", "ja", "ru", "tr", "zh")
POPE_SPLITS = ("random", "popular", "adversarial")

IGLUE = "https://raw.githubusercontent.com/e-bug/iglue/main/datasets/"
POPE = "https://raw.githubusercontent.com/AoiDragon/POPE/e3e39262c85a6a83f26cf5094022a782cb0df58d/"
MBLIP_TRAIN = "https://huggingface.co/datasets/Gregor/mblip-train/resolve/main/"
VQA = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/"
LLAVA = "https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main/"

LIC_IGLUE = "IGLUE repo MIT; text licences of the underlying datasets apply"


@dataclass(frozen=True)
class Source:
    """One file (or user-provided folder) of the paper pipeline."""
    name: str
    """Unique id, e.g. ``xgqa-test-de``; what the coverage report lists."""
    url: str | None
    """Public download URL; None when there is none (then ``note`` says where to get it)."""
    dest: str
    """Path relative to the paper data root (``data/paper/``)."""
    kind: Literal["annotation", "images", "model-data"]
    """annotation = benchmark/task text; images = image archives or folders; model-data = the authors' released files."""
    benchmark: str
    """Benchmark or training task the file belongs to (e.g. ``xgqa``, ``taskmix``)."""
    license: str
    """Licence as stated by the source (reference/mblip-protocol.md §14, eval-suite.md)."""
    sha256: str | None = None
    """Pinned SHA-256; None = trust on first use (recorded in CHECKSUMS.sha256)."""
    size: int | None = None
    """Exact size in bytes if known (verified); None = unknown."""
    unpack: Literal["zip", "tgz"] | None = None
    """Archive format to unpack after download, or None."""
    required_for: tuple[str, ...] = ()
    """Tags (see `TAGS`) of what needs this file."""
    note: str = ""
    """Where to get it by hand / provenance caveats; shown in the coverage report."""
    unpack_to: str | None = None
    """Folder (relative) to unpack into; default: ``dest`` without the archive suffix (``coco/train2014.zip``
    -> ``coco/train2014/``). A single top-level folder named like the target is not repeated inside it."""
    folder: bool = False
    """``dest`` is a folder the user provides (no download); fetch only checks it is there."""
    approx_mb: float | None = None
    """Approximate size in MB where a reference states one (for planning; not verified)."""

    def __post_init__(self):
        where = f"Source {self.name!r} (mblip/sources.py)"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.unpack not in UNPACK:
            raise ValueError(f"{where}: unpack must be one of {UNPACK}, got {self.unpack!r}")
        if self.dest.startswith("/") or ".." in self.dest.split("/") or not self.dest.strip("/"):
            raise ValueError(f"{where}: dest must be a relative path under data/paper/, got {self.dest!r}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{where}: sha256 must be 64 lower-case hex digits or None, got {self.sha256!r}")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"{where}: url must be http(s) or None, got {self.url!r}")
        if self.url is None and not self.note:
            raise ValueError(f"{where}: a source without url needs a note saying where to get it")
        if self.folder and (self.url is not None or self.unpack is not None):
            raise ValueError(f"{where}: folder=True means user-provided; it takes no url and no unpack")
        unknown = [t for t in self.required_for if t not in TAGS]
        if unknown:
            raise ValueError(f"{where}: unknown required_for tag(s) {unknown}; known: {' '.join(TAGS)}")

    @property
    def unpacked(self) -> str | None:
        """Relative folder the archive unpacks into (None if not an archive)."""
        if self.unpack is None:
            return None
        if self.unpack_to:
            return self.unpack_to
        for suffix in (".tar.gz", ".tgz", ".zip"):
            if self.dest.endswith(suffix):
                return self.dest[: -len(suffix)]
        return self.dest + ".d"


def _iglue(name, path, bench, tags, *, note="", unpack=None, unpack_to=None, lic=LIC_IGLUE):
    return Source(name, IGLUE + path, "iglue/" + path, "annotation", bench, lic, unpack=unpack,
                  unpack_to=unpack_to, required_for=tags, note=note)


def _released(path, tags, approx_mb=None, note=""):
    """A file of the authors' HF dataset `Gregor/mblip-train` (protocol §14)."""
    name = "mblip-train-" + re.sub(r"[^a-z0-9]+", "-", path.lower().removesuffix(".json")).strip("-")
    return Source(name, MBLIP_TRAIN + path, "mblip-train/" + path, "model-data", "taskmix",
                  "other (HF dataset card of Gregor/mblip-train); source-data and NLLB licences apply",
                  required_for=tags, approx_mb=approx_mb, note=note)


def paper_sources() -> list[Source]:
    """The manifest of the paper presets, in a stable order (benchmarks, fine-tuning, training data)."""
    s: list[Source] = []
    # ---------------------------------------------------------------- XM3600 (eval-suite §2); MaXM uses its images
    s += [
        Source("xm3600-captions", "https://google.github.io/crossmodal-3600/web-data/captions.zip",
               "xm3600/captions.zip", "annotation", "xm3600", "CC BY 4.0 (Google LLC)", unpack="zip",
               required_for=("xm3600",)),
        Source("xm3600-images", "https://open-images-dataset.s3.amazonaws.com/crossmodal-3600/images.tgz",
               "xm3600/images.tgz", "images", "xm3600",
               "Open Images per-image licences (mostly CC BY 2.0; see image_attributions.csv)", unpack="tgz",
               required_for=("xm3600", "maxm")),
        Source("maxm", "https://storage.googleapis.com/maxm/maxm_v1_release.zip", "maxm/maxm_v1_release.zip",
               "annotation", "maxm", "free for any purpose (Google LLC LICENSE)", unpack="zip",
               required_for=("maxm",), approx_mb=0.157),
    ]
    # ---------------------------------------------------------------- xGQA + GQA (eval-suite §3)
    s += [_iglue(f"xgqa-test-{l}", f"xGQA/annotations/few_shot/{l}/test.json", "xgqa", ("xgqa",),
                 lic="CC BY 4.0 (xGQA)") for l in XGQA_LANGS]
    s += [_iglue(f"xgqa-dev-{l}", f"xGQA/annotations/few_shot/{l}/dev.json", "xgqa", ("finetune-xgqa",),
                 lic="CC BY 4.0 (xGQA)") for l in ("en", "de")]
    s += [
        _iglue("gqa-train", "gqa/annotations/train.json.zip", "xgqa", ("finetune-xgqa",), unpack="zip",
               unpack_to="iglue/gqa/annotations", lic="CC BY 4.0 (GQA)"),
        Source("gqa-images", "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip", "gqa/images.zip",
               "images", "xgqa", "CC BY 4.0 (GQA / Visual Genome)", unpack="zip",
               required_for=("xgqa", "finetune-xgqa"), note="~20 GB; unpacks to gqa/images/<imageId>.jpg"),
    ]
    # ---------------------------------------------------------------- XVNLI (eval-suite §4); images = Flickr30k
    s += [_iglue(f"xvnli-test-{l}", f"XVNLI/annotations/{l}/test.jsonl", "xvnli", ("xvnli",)) for l in XVNLI_LANGS]
    s += [
        _iglue("xvnli-train-en", "XVNLI/annotations/en/train.jsonl.zip", "xvnli", ("finetune-xvnli",),
               unpack="zip", unpack_to="iglue/XVNLI/annotations/en"),
        _iglue("xvnli-dev-en", "XVNLI/annotations/en/dev.jsonl", "xvnli", ("finetune-xvnli",)),
        _iglue("xvnli-dev-fr-mt", "XVNLI/annotations/en/dev-fr_gmt.jsonl", "xvnli", ("finetune-xvnli",),
               note="Google-MT French dev; mBLIP validates on its first 1,800 rows"),
    ]
    # ---------------------------------------------------------------- MaRVL + NLVR2 (eval-suite §5)
    s += [_iglue(f"marvl-test-{l}", f"marvl/zero_shot/annotations/marvl-{l}.jsonl", "marvl", ("marvl",),
                 lic="CC BY 4.0 (MaRVL text)") for l in MARVL_LANGS]
    s += [_iglue("nlvr2-test", "nlvr2/annotations/test.jsonl", "marvl", ("marvl",),
                 note="NLVR2 test = the 'en' column of MaRVL")]
    s += [_iglue(f"nlvr2-{split}", f"nlvr2/annotations/{split}.jsonl", "marvl", ("finetune-marvl",))
          for split in ("train", "dev")]
    s += [_iglue("nlvr2-dev-id-mt", "nlvr2/annotations/dev-id_gmt.jsonl", "marvl", ("finetune-marvl",),
                 note="Google-MT Indonesian dev; mBLIP validates on its first 2,000 rows")]
    # ---------------------------------------------------------------- xFlickrCO + Flickr30k (eval-suite §6.1)
    s += [_iglue(f"xflickrco-test-{l}", f"xFlickrCO/annotations/{l}/test.jsonl", "xflickrco", ("xflickrco",))
          for l in XFLICKRCO_LANGS]
    flickr_note = ("path read by the authors' data/flickr/generate_flickr.py (iglue/datasets/flickr30k); "
                   "if it 404s, the same split is in coco-karpathy's dataset_flickr30k.json")
    s += [
        _iglue("flickr30k-test", "flickr30k/annotations/test_ann.jsonl", "xflickrco", ("xflickrco",),
               note="English xFlickrCO in mBLIP = Flickr30k test, 5 refs; " + flickr_note),
        _iglue("flickr30k-valid", "flickr30k/annotations/valid_ann.jsonl", "xflickrco", ("finetune-flickr",)),
        _iglue("flickr30k-train", "flickr30k/annotations/train_ann.jsonl", "xflickrco", ("finetune-flickr",),
               note=flickr_note),
    ]
    # ---------------------------------------------------------------- POPE / CHAIR (eval-suite §7)
    s += [Source(f"pope-{sp}", POPE + f"output/coco/coco_pope_{sp}.json", f"pope/coco_pope_{sp}.json",
                 "annotation", "pope", "MIT (POPE)", required_for=("pope",)) for sp in POPE_SPLITS]
    # ---------------------------------------------------------------- COCO: images, Karpathy split (protocol §6; eval-suite §8.2)
    s += [
        Source("coco-train2014", "http://images.cocodataset.org/zips/train2014.zip", "coco/train2014.zip",
               "images", "coco", "COCO: CC BY 4.0 annotations, Flickr terms for images", unpack="zip",
               required_for=("taskmix", "taskmix-released"),
               note="~13 GB; COCO captions, VQAv2, A-OKVQA, LLaVA images of the task mix"),
        Source("coco-val2014", "http://images.cocodataset.org/zips/val2014.zip", "coco/val2014.zip",
               "images", "coco", "COCO: CC BY 4.0 annotations, Flickr terms for images", unpack="zip",
               required_for=("coco", "vqav2", "pope", "chair", "xflickrco"),
               note="~6 GB; Karpathy val/test, VQAv2 val, POPE, half of xFlickrCO"),
        Source("coco-karpathy", "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
               "coco/caption_datasets.zip", "annotation", "coco", "COCO captions CC BY 4.0", unpack="zip",
               required_for=("coco", "chair", "taskmix"),
               note="holds dataset_coco.json (Karpathy split) and dataset_flickr30k.json"),
    ]
    # ---------------------------------------------------------------- VQAv2 (protocol §6 row 7-8; eval-suite §8.1)
    for split, tags in (("Train", ("taskmix",)), ("Val", ("vqav2",))):
        for part in ("Questions", "Annotations"):
            s.append(Source(f"vqav2-{part.lower()}-{split.lower()}", f"{VQA}v2_{part}_{split}_mscoco.zip",
                            f"vqav2/v2_{part}_{split}_mscoco.zip", "annotation", "vqav2", "CC BY 4.0 (VQA)",
                            unpack="zip", required_for=tags))
    # ---------------------------------------------------------------- other English task-mix sources (protocol §6)
    s += [
        Source("aokvqa", "https://prior-datasets.s3.us-east-2.amazonaws.com/aokvqa/aokvqa_v1p0.tar.gz",
               "aokvqa/aokvqa_v1p0.tar.gz", "annotation", "taskmix", "Apache 2.0 (A-OKVQA)", unpack="tgz",
               required_for=("taskmix",)),
        Source("llava-detail", LLAVA + "detail_23k.json", "llava/detail_23k.json", "annotation", "taskmix",
               "CC BY-NC 4.0 (+ OpenAI terms)", required_for=("taskmix",)),
        Source("llava-conversation", LLAVA + "conversation_58k.json", "llava/conversation_58k.json",
               "annotation", "taskmix", "CC BY-NC 4.0 (+ OpenAI terms)", required_for=("taskmix",)),
        Source("webcapfilt-blip",
               "https://storage.googleapis.com/sfr-vision-language-research/BLIP/datasets/ccs_synthetic_filtered_large.json",
               "webcapfilt/ccs_synthetic_filtered_large.json", "annotation", "taskmix", "BSD-3 (BLIP)",
               required_for=("taskmix",),
               note="the full BLIP Web CapFilt list (salesforce/BLIP README); only needed to re-run the "
                    "authors' noun-phrase subsampling (protocol §6.2), else use the released 2,273,005-row list"),
        Source("babel-imagenet-labels",
               "https://raw.githubusercontent.com/gregor-ge/Babel-ImageNet/8f9b2781992e9a83ac8c1b8569577d8de5ab38d6/data/babel_imagenet-298.json",
               "imagenet/babel_imagenet-298.json", "annotation", "taskmix", "BabelNet non-commercial licence",
               required_for=("taskmix",)),
        Source("imagenet-train", None, "imagenet/train", "images", "taskmix", "ImageNet non-commercial terms",
               folder=True, required_for=("taskmix", "taskmix-released"),
               note="ImageNet-1k needs an account and licence acceptance at image-net.org: put the ILSVRC2012 "
                    "train folder (synset sub-folders) at data/paper/imagenet/train, or pass --local"),
    ]
    # ---------------------------------------------------------------- images behind licence forms (user provides)
    s += [
        Source("flickr30k-images", None, "flickr30k/images", "images", "xflickrco",
               "Flickr terms of use (research)", folder=True,
               required_for=("xflickrco", "xvnli", "finetune-xvnli", "finetune-flickr"),
               note="Flickr30k images are given out after a request form (IGLUE datasets/README.md links a "
                    "Kaggle mirror); put the <id>.jpg files at data/paper/flickr30k/images"),
        Source("marvl-images", None, "marvl/images", "images", "marvl", "research / non-commercial (MaRVL)",
               folder=True, required_for=("marvl",),
               note="download from Dataverse doi:10.5683/SP3/42VZ4P; layout <lang>/images/<concept>/<img> "
                    "(mBLIP NFKD-normalises these paths)"),
        Source("nlvr2-images", None, "nlvr2/images", "images", "marvl", "NLVR2 terms (lil-lab)", folder=True,
               required_for=("marvl", "finetune-marvl"),
               note="request access at github.com/lil-lab/nlvr (nlvr2 'direct image download'); "
                    "put train/dev/test images at data/paper/nlvr2/images"),
    ]
    # ---------------------------------------------------------------- the authors' released files (protocol §14)
    parts = "taskmix-released"
    s += [
        _released("task_mix_v2_mt.json", (parts,), 963,
                  note="the whole v2 instruction mix in one file (protocol §6)"),
        _released("task_mix_mt.json", (parts,), 748, note="v1 mix (arXiv v1)"),
        _released("blip_captions/ccs_synthetic_filtered_large_2273005_raw.json", ("webcapfilt-images", parts), 507,
                  note="the authors' Web CapFilt sample with image URLs: input of download_images"),
        _released("blip_captions/ccs_synthetic_filtered_large_2273005_mt.json", (parts,), 462),
        _released("blip_captions/ccs_synthetic_match_1000-601000_mt_seed42.json", (parts,), 115),
        _released("mscoco/coco_train_mt.json", (parts,), 84.3),
        _released("llava/detail_23k_mt.json", (parts,), 16.2,
                  note="file name from the authors' merge_train.py; folder llava/ per the dataset card"),
        _released("llava/conversation_58k_split_max3sent_mt.json", (parts,), 57.6,
                  note="file name from the authors' merge_train.py; folder llava/ per the dataset card"),
        _released("aokvqa/aokvqa_cot_en.json", (parts,), 8.35),
        _released("aokvqa/aokvqa_explain_en.json", (parts,), 7.7),
        _released("vqa/vqav2_vqa_mt_mtlabels.json", (parts,), 78.9),
        _released("vqa/vqav2_vqg_mt_mtlabels.json", (parts,), 94.3),
        _released("imagenet/imagenet_8iter.json", (parts,), 48.1),
        _released("imagenet/imagenet_8iter_decide.json", (parts,), 42.2),
        _released("vqa/vqav2_val.json", ("vqav2",), 44.8,
                  note="mBLIP's VQAv2 eval file (its first 5,000 rows are the reported subset)"),
        _released("hallucinations/chair_test.json", ("chair",),
                  note="CHAIR inputs with POPE's ground-truth objects embedded (the POPE segmentation file "
                       "itself has no pinned public URL)"),
        _released("hallucinations/chair_val.json", ("chair",)),
    ]
    names = [x.name for x in s]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"mblip/sources.py: duplicate source names {dup}")
    return s


def select(sources: Iterable[Source], only: Iterable[str] | str | None) -> list[Source]:
    """Sources matching any selector: a name (glob allowed, e.g. ``xgqa-*``), a benchmark, or a required_for tag.

    A selector that matches nothing is an error (a typo must not silently fetch nothing).
    """
    sources = list(sources)
    if only is None:
        return sources
    if isinstance(only, str):
        only = [x for x in re.split(r"[,\s]+", only) if x]
    only = list(only)
    keep, unmatched = [], []
    for sel in only:
        hit = [x for x in sources if fnmatch.fnmatchcase(x.name, sel) or sel == x.benchmark or sel in x.required_for]
        if not hit:
            unmatched.append(sel)
        keep += hit
    if unmatched:
        tags = sorted(set(TAGS) | {x.benchmark for x in sources})
        raise ValueError(f"--only {' '.join(unmatched)!s}: matches no source. Use a source name (glob ok, "
                         f"see mblip.sources.paper_sources()), a benchmark or a tag: {' '.join(tags)}")
    seen, out = set(), []
    for x in sources:  # manifest order, no duplicates
        if x in keep and x.name not in seen:
            seen.add(x.name)
            out.append(x)
    return out
