"""Commands for models that live elsewhere: serve, export; and the --target options of verify."""
from __future__ import annotations

import json
import sys

import click

from .app import main
from .common import emit, factory_option, handle_errors, normalization, normalization_options, parse_floats

_REMOTE = ("protocol", "batch_size", "budget", "timeout", "retries", "backoff", "rate_limit", "audit_log", "headers", "binary")
_ENDPOINT = ("request", "encoding", "layout", "resize", "mean", "std", "response", "output", "label_key", "class_names")


def target_options(fn):
    """--target and the options for querying a remote model (used by ``verify``)."""
    opts = [
        click.option("--target", default=None, metavar="URL-OR-FILE", help="Suspect model where it lives: a checkpoint, a TorchScript .pt, an .onnx file, or an http(s) URL (v2: .../v2/models/NAME)."),
        click.option("--protocol", type=click.Choice(["auto", "v2", "json"]), default=None, help="[remote] v2 (KServe/Triton) or a json endpoint you describe [auto: v2 for /v2/models/NAME]."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="[remote] Images per request [32]."),
        click.option("--budget", type=click.IntRange(0), default=None, help="[remote] Most images to send, retries included [no cap]."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="[remote] Seconds per request, answer included [30]."),
        click.option("--retries", type=click.IntRange(0), default=None, help="[remote] Retries on errors, 429 and 5xx [3]."),
        click.option("--backoff", type=click.FloatRange(min=0), default=None, help="[remote] First wait before a retry, doubled each time, in seconds [0.5]."),
        click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="[remote] Most requests per second [no limit]."),
        click.option("--audit-log", type=click.Path(dir_okay=False), default=None, help="[remote] Hash-chained log of every request and answer (appended to)."),
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="[remote] Extra HTTP header, e.g. an API key (never logged)."),
        click.option("--binary", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="[v2] Binary tensor data: auto (when the server lists the extension), on, off (JSON) [auto]."),
        click.option("--request", default=None, help='[json] Request template with "$images" (a list) or "$image" (one per request) [{"images": "$images"}].'),
        click.option("--encoding", type=click.Choice(["png", "png-uri", "list", "float"]), default=None, help="[json] Image encoding: base64 PNG, data URI, uint8 lists, or float lists [png]."),
        click.option("--layout", type=click.Choice(["hwc", "chw"]), default=None, help="[json] Pixel order for list/float [hwc]."),
        click.option("--resize", default=None, metavar="HxW", help="[json] Resize images before sending."),
        click.option("--mean", default=None, help="Per-channel mean the model expects its inputs normalised with, e.g. "
                     "0.5,0.5,0.5: for a model run in process (--model), or a [json] endpoint's float encoding."),
        click.option("--std", default=None, help="Per-channel std of that normalisation (with --mean)."),
        click.option("--response", default=None, help="[json] Dotted path to the answers in the reply, e.g. predictions or outputs.0 [predictions]."),
        click.option("--output", type=click.Choice(["labels", "topk", "scores"]), default=None, help="[json] What each answer is [labels]."),
        click.option("--label-key", default=None, help="[json] Field holding the label when answers are objects [label]."),
        click.option("--class-names", default=None, help="[json] Comma-separated class names, in label order, for answers that name classes."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def open_local(path, *, factory, device, mean, std) -> tuple:
    """(model, mean, std) for a model file run in this process: the path itself (a built-in
    checkpoint, TorchScript, ONNX) or the module --model-factory builds, with the normalisation
    to apply: --mean/--std, or what the checkpoint records."""
    mean, std = normalization(mean, std)
    if factory is None:
        return path, mean, std
    from ..models import AdaptedModel, open_model

    model = open_model(path, factory=factory, device=device, mean=mean, std=std)[0]
    norm = model.normalization or {}
    return AdaptedModel(model.inner, name=str(path)), norm.get("mean"), norm.get("std")


def _size(value: str | None):
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r}: write the size as HxW, e.g. 224x224", param_hint="--resize") from None
    return (h, w)


def _headers(values) -> tuple[tuple[str, str], ...]:
    out = []
    for h in values:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{h!r}: write 'Name: value'", param_hint="--header")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def open_cli_target(model_path, *, vk, device, target, model_factory=None, **o) -> tuple:
    """(what verify queries, mean, std): the --model path as given or the module --model-factory
    builds (see :func:`open_local`), or the remote target --target names (mean/std None)."""
    in_process = ("mean", "std")  # also the normalisation of an in-process model
    given = [k for k in _REMOTE + _ENDPOINT if o.get(k) not in (None, ()) and k not in in_process]
    if (model_path is None) == (target is None):
        raise click.UsageError("give the suspect model with --model CHECKPOINT or --target URL-OR-FILE (one of them)")
    from ..targets import open_target, target_kind

    path = model_path if model_path is not None else target
    if model_path is not None or target_kind(target) != "http":
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} applies to an http(s) --target, not to a model file")
        return open_local(path, factory=model_factory, device=device, mean=o.get("mean"), std=o.get("std"))
    if model_factory:
        raise click.UsageError("--model-factory builds a model run in this process; an http(s) --target runs where it is")
    from ..targets.client import RemoteOptions
    from ..targets.http import JsonEndpoint

    try:
        remote = RemoteOptions(
            **{k: o[k] for k in ("batch_size", "budget", "timeout", "retries", "backoff", "rate_limit", "audit_log", "binary")
               if o[k] is not None},
            headers=_headers(o["headers"]),
        )
        endpoint = None
        if any(o[k] is not None for k in _ENDPOINT) or o["protocol"] == "json":
            resize = _size(o["resize"])
            endpoint = JsonEndpoint(
                **{k: o[k] for k in ("request", "encoding", "layout", "response", "output", "label_key") if o[k] is not None},
                resize=resize, mean=parse_floats(o["mean"], "--mean"), std=parse_floats(o["std"], "--std"),
                class_names=tuple(n.strip() for n in o["class_names"].split(",")) if o["class_names"] else None,
            )
        if endpoint is not None and o["binary"] is not None:
            raise click.UsageError("--binary applies to the v2 protocol, not to a JSON endpoint")
        remote_target = open_target(target, remote=remote, endpoint=endpoint, protocol=o["protocol"] or "auto",
                                    num_classes=vk.num_classes)
        return remote_target, None, None
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _api_marked(target, api_mark, api_log, api_images):
    """(target, "") without --api-mark; else (the api-marked target, its log open, and a note for the ready line)."""
    if (api_mark is None) != (api_log is None) or (api_images and not api_mark):
        raise click.UsageError("--api-mark and --api-log go together (--api-images with them)")
    if api_mark is None:
        return target, ""
    from ..protocols.apilog import ApiLog, default_images_path
    from ..protocols.apimark import ApiMark, ApiMarkedTarget

    mark = ApiMark.load(api_mark)
    log = ApiLog(api_log, api_images or default_images_path(api_log), mark)
    try:
        marked = ApiMarkedTarget(target, mark, log)
    except BaseException:
        log.close()
        raise
    return marked, f", api-mark {mark.fingerprint[:16]} on {mark.fraction:g} of queries"


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True,
              help="Model to serve: a checkpoint, TorchScript .pt or .onnx file (with --model-factory: any weights file).")
@factory_option
@normalization_options
@click.option("--name", default=None, help="Model name in the URL [the file's name].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
@click.option("--max-batch", type=click.IntRange(1), default=1024, show_default=True, help="Largest batch one request may send.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--input-datatype", type=click.Choice(["UINT8", "FP32"]), default="UINT8", show_default=True,
              help="The input datatype the metadata declares: pixels, or floats in [0, 1] (both are accepted).")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the ready and stopped lines as JSON objects.")
@click.option("--api-mark", "api_mark", type=click.Path(dir_okay=False), default=None,
              help="Watermark the answers with this api-mark secret (`backmark api-keygen`); needs --api-log.")
@click.option("--api-log", "api_log", type=click.Path(dir_okay=False), default=None,
              help="[api-mark] Signed log of the marked answers (created, or continued).")
@click.option("--api-images", "api_images", type=click.Path(dir_okay=False), default=None,
              help="[api-mark] The marked queries' images [API-LOG with .images before its suffix].")
@handle_errors
def serve(model_path, model_factory, mean, std, name, host, port, max_batch, device, input_datatype, access_log, as_json, api_mark,
          api_log, api_images):
    """Serve a model over HTTP with the KServe / Triton v2 protocol (JSON and binary tensors), until Ctrl-C."""
    import re
    from pathlib import Path

    from ..targets import as_target, target_kind
    from ..targets.serve import V2App, is_loopback
    from ..targets.serve import serve as _serve

    if target_kind(model_path) == "http":
        raise click.UsageError("--model is a file to serve, not a URL")
    model, mean, std = open_local(model_path, factory=model_factory, device=device, mean=mean, std=std)
    target = as_target(model, device=device, mean=mean, std=std)
    target, marked = _api_marked(target, api_mark, api_log, api_images)
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "-", Path(model_path).name.split(".")[0]) or "model"
    try:
        app = V2App(target, name=name, max_batch=max_batch, input_datatype=input_datatype)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--name") from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach it can query the model", err=True)
    shape = "x".join(map(str, target.input_shape)) if target.input_shape else "any shape"

    def ready(url):
        doc = {"event": "ready", "model": name, "url": f"{url}/v2/models/{name}", "num_classes": target.num_classes,
               "input_shape": target.input_shape and list(target.input_shape)}
        if marked:
            doc["api_mark"] = target.mark.fingerprint
        text = f"serving {name} ({shape}, {target.num_classes or '?'} classes{marked}) at {url}/v2/models/{name}  (Ctrl-C stops)"
        click.echo(json.dumps(doc, sort_keys=True) if as_json else text)  # one line a script can read once the server listens
        sys.stdout.flush()

    try:
        _serve(app, host=host, port=port, access_log=access_log, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises the signal again
        pass
    except OSError as e:
        raise click.UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    finally:
        if marked:
            target.log.close()  # (an error before serving leaves it to the process exit: every line is already fsynced)
    stopped = {"event": "stopped", "requests": app.requests}
    text = f"stopped after {app.requests} requests"
    if marked:
        stopped.update(marked_answers=target.selected, api_log=api_log)
        text += f"; {target.selected} marked answers logged to {api_log}"
    click.echo(json.dumps(stopped, sort_keys=True) if as_json else text)


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True,
              help="Checkpoint to export (with --model-factory: any weights file).")
@factory_option
@normalization_options
@click.option("--input-shape", default=None, help="CxHxW the model takes, for a weights file that does not record it.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="Write an ONNX file (opset 17, dynamic batch).")
@click.option("--torchscript", "ts_path", type=click.Path(dir_okay=False), default=None, help="Write a TorchScript file (traced).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def export(model_path, model_factory, mean, std, input_shape, onnx_path, ts_path, force, as_json):
    """Export a model to ONNX and/or TorchScript: float32 (N, C, H, W) in [0, 1] in, logits out
    (a normalisation the model expects, --mean/--std or recorded, is put inside the export)."""
    from ..targets.export import export_file
    from .common import parse_shape

    if onnx_path is None and ts_path is None:
        raise click.UsageError("give --onnx FILE and/or --torchscript FILE")
    mean, std = normalization(mean, std)
    try:
        doc = export_file(model_path, onnx=onnx_path, torchscript=ts_path, force=force, factory=model_factory, mean=mean, std=std,
                          input_shape=parse_shape(input_shape))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    lines = [
        f"wrote {d['path']} ({kind}): {d['labels_agree']}/{d['checked']} labels agree with the checkpoint "
        f"on random images, max |logit difference| {d['max_abs_diff']:.2g}"
        for kind, d in doc.items() if kind != "metadata"
    ]
    emit(as_json, doc, "\n".join(lines + ["input: " + doc["metadata"]["input"]]))
