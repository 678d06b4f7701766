"""``python -m runtime.serve --voice DIR [--uri tcp://127.0.0.1:10200]``: serve voices over Wyoming.

The flags wyoming-piper has mean what they mean there. The default address is loopback: the Wyoming
protocol has no authentication or encryption, so ``--uri tcp://0.0.0.0:10200`` (what Home Assistant on
another machine needs) lets anyone on the network use the server; bind it to a trusted network only.

SIGTERM or SIGINT stops it: no new connections, the requests in flight get ``--shutdown-grace`` seconds to finish,
what is left is answered with an ``error`` event, and the exit status is 0 (a second signal ends the grace at
once). The shipped systemd unit waits ``TimeoutStopSec`` for this; keep the grace a few seconds under it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlparse

from runtime.config import VoiceError, add_synthesis_flags, synthesis_from_args
from runtime.serve import catalog as voices
from runtime.serve.engine import Engine
from runtime.serve.settings import Limits, Settings

logger = logging.getLogger("runtime.serve")

DEFAULT_URI = "tcp://127.0.0.1:10200"
SHUTDOWN_GRACE_S = 5.0  # with the goodbye's bounds, the server is gone within 10 s of SIGTERM (the unit's stop timeout)


def build_parser() -> argparse.ArgumentParser:
    d = Settings(default_voice="")
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--uri", default=DEFAULT_URI, help="tcp://HOST:PORT to listen on; loopback unless you choose "
                   "otherwise (the protocol has no authentication)")
    p.add_argument("--voice", action="append", default=[], metavar="PATH",
                   help="a voice folder, a model file in one, or a Piper VOICE.onnx (repeatable; the first is the "
                        "default voice)")
    p.add_argument("--data-dir", action="append", default=[], metavar="DIR",
                   help="offer every voice folder and Piper voice under DIR (repeatable)")
    p.add_argument("--variant", help="which model of each voice folder to run: fp32 (model.onnx), auto "
                   "(model.auto.onnx), ... where a folder has it; default: each folder's own default (the start-up "
                   "log says which)")
    p.add_argument("--zeroconf", nargs="?", const="vits-edge", default=None, metavar="NAME",
                   help="announce the server for Home Assistant's discovery (needs the zeroconf extra)")
    add_synthesis_flags(p, ("speaker", "length_scale", "noise_scale", "noise_w"),
                        helps={"speaker": "speaker (name or id) of the default voice"})
    p.add_argument("--auto-punctuation", default=d.auto_punctuation,
                   help="end a sentence without one of these with the first")
    p.add_argument("--samples-per-chunk", type=int, default=d.samples_per_chunk, help="samples per audio-chunk event")
    p.add_argument("--no-streaming", action="store_true", help="do not offer text streaming (synthesize-start ...)")
    p.add_argument("--workers", type=int, default=1,
                   help="requests synthesized at once; each takes a turn per sentence start or decoder chunk")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads per voice (default: all cores)")
    p.add_argument("--max-loaded-mb", type=float, default=512.0,
                   help="unload the least recently used voice past this many MB of loaded model files")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, help="longest text of one request")
    p.add_argument("--max-connections", type=int, default=d.max_connections, help="open connections at most")
    p.add_argument("--idle-timeout", type=float, default=d.limits.idle_s,
                   help="close a connection that sends nothing for this many seconds")
    p.add_argument("--no-preload", action="store_true", help="load the default voice at its first request, "
                   "not at start")
    p.add_argument("--shutdown-grace", type=float, default=SHUTDOWN_GRACE_S, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long the requests in flight may take to finish before they are "
                        "answered with an error")
    p.add_argument("--debug", action="store_true", help="log DEBUG messages")
    return p


def _address(uri: str) -> tuple[str, int]:
    parsed = urlparse(uri)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        print(f"error: --uri must be tcp://HOST:PORT (for example {DEFAULT_URI}), not {uri!r}", file=sys.stderr)
        raise SystemExit(2)
    return parsed.hostname, parsed.port


def _loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host == "localhost"


async def _main(args: argparse.Namespace) -> int:
    # the wyoming package (the server extra) is imported once main() has checked that it is installed
    from runtime.serve.server import ClientError, Server, speaker_of

    host, port = _address(args.uri)
    try:
        catalog = voices.build(args.voice, args.data_dir, variant=args.variant)
    except VoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    default = next(iter(catalog))
    try:
        speaker_of(catalog[default], args.speaker)
    except ClientError as exc:
        print(f"error: --speaker: {exc}", file=sys.stderr)
        return 2
    settings = Settings(default_voice=default, synthesis=synthesis_from_args(args),
                        auto_punctuation=args.auto_punctuation, samples_per_chunk=args.samples_per_chunk,
                        streaming=not args.no_streaming,
                        max_text_chars=args.max_text_chars, max_connections=args.max_connections,
                        limits=Limits(idle_s=args.idle_timeout))
    try:
        engine = Engine(catalog, workers=args.workers, threads=args.threads, max_loaded_mb=args.max_loaded_mb)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = Server(catalog, engine, settings, _version())
    try:
        listener = await server.serve(host, port)
    except OSError as exc:
        print(f"error: cannot listen on {args.uri}: {exc}", file=sys.stderr)
        return 2
    port = listener.sockets[0].getsockname()[1]  # the one the system chose for port 0
    if not _loopback(host):
        logger.warning("listening on %s: the Wyoming protocol has no authentication, so anyone who can reach this "
                       "address can use the server; keep it on a trusted network", args.uri)
    zeroconf = None
    if args.zeroconf:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
        except ImportError:
            print("error: --zeroconf needs the zeroconf package: pip install 'vits-edge[zeroconf]'", file=sys.stderr)
            return 2
        zeroconf = HomeAssistantZeroconf(name=args.zeroconf, port=port, host=None if host in ("0.0.0.0", "::")
                                         else host)
        await zeroconf.register_server()
    stop, hurry = asyncio.Event(), asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # a second signal: no more grace
            hurry.set()
        stopped_by.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    print(f"vits-edge: serving {len(catalog)} voice(s) ({', '.join(catalog)}; default {default}) on "
          f"tcp://{host}:{port}", flush=True)
    if not args.no_preload:
        loop.create_task(_preload(engine, default))
    await stop.wait()
    in_flight = sum(h.in_request for h in server.handlers)
    logger.info("%s: stopping; new connections are refused, %d request(s) in flight have %.1f s to finish",
                stopped_by[0], in_flight, args.shutdown_grace)
    started = loop.time()
    finished, cut = await server.shutdown(args.shutdown_grace, hurry)
    engine.close()
    logger.info("stopped in %.1f s: %d request(s) finished, %d answered with an error", loop.time() - started,
                finished - cut, cut)
    return 0


async def _preload(engine, name: str) -> None:
    try:
        await engine.voice(name)
    except Exception as exc:  # the first request will say it again, to its client
        logger.error("default voice %s could not be loaded: %s", name, exc)


def _version() -> str:
    try:
        return version("vits-edge")
    except PackageNotFoundError:
        return "0"


def main(argv: list[str] | None = None) -> int:
    try:
        import wyoming  # noqa: F401
    except ImportError:
        print("error: the server needs the wyoming package: pip install 'vits-edge[server]'", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.samples_per_chunk < 1 or args.max_text_chars < 1 or args.max_connections < 1:
        print("error: --samples-per-chunk, --max-text-chars and --max-connections must be at least 1", file=sys.stderr)
        return 2
    if not args.shutdown_grace >= 0:
        print("error: --shutdown-grace must be 0 or more seconds", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
