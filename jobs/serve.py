"""Serve registered generators as HTTP endpoints (Ray Serve), on 127.0.0.1 by default.

    RAYGAN_SERVE_TOKEN=... python jobs/serve.py --task jpeg=models:/raygan-wcdgan-jpeg-q10-rgb@champion

reads deploy/serve_config.yaml (the same application `serve run` / `serve deploy` and the
KubeRay RayService use), keeps the tasks given with --task (each `name=<model URI>`; a new
name gets the options of the config's first restore deployment), starts Serve and blocks
until Ctrl-C. `make serve` serves the `make demo` model with a token in .raygan/serve_token.
Without --task, every task of the config is served. Open http://127.0.0.1:8000/ for the page,
/docs for the API; `python -m raygan.deploy.client` restores files and folders.
"""
import argparse
import sys
import time

import raygan  # noqa: F401  (its ENV_DEFAULTS apply before Ray or MLflow load)


def main(argv=None) -> int:
    from raygan.deploy.app import ModelRefError, read_token
    from raygan.deploy.serving import load_serve_config, run_local

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="Serve config YAML (default: deploy/serve_config.yaml)")
    p.add_argument("--task", action="append", default=[], metavar="NAME=MODEL_URI",
                   help="serve this task with this model (repeatable); replaces the config's tasks")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI (default: the runs')")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, 8000)")
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, 127.0.0.1)")
    args = p.parse_args(argv)
    try:
        read_token()
        tasks = {}
        for item in args.task:
            name, sep, uri = item.partition("=")
            if not sep or not name or not uri:
                raise ValueError(f"--task {item!r}: expected NAME=MODEL_URI")
            tasks[name] = uri
        config = load_serve_config(args.config, tasks, args.tracking_uri, args.host, args.port)
        url = run_local(config)
    except (ModelRefError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    print(f"raygan: serving {sorted(config['app']['args']['tasks'])} at {url}/ (API docs {url}/docs); "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
