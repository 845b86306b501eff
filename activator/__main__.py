"""`python -m activator`: read the environment, make the clients, serve until
SIGTERM, then drain and exit 0. Configuration errors are one line on stderr and
exit code 2; logs are one line per event on stdout."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any, Mapping, Optional

import boto3
from botocore.exceptions import BotoCoreError

from activator.activity import CLOUDWATCH_CONFIG
from activator.kube import kubernetes_api
from activator.service import Activator
from activator.settings import Settings, SettingsError, from_env
from activator.waker import EC2_CONFIG

log = logging.getLogger("activator")


def aws_clients(environ: Mapping[str, str]) -> tuple[Any, Any]:
    """boto3 resolves credentials, AWS_ENDPOINT_URL and the region itself; boto3
    reads the region from AWS_DEFAULT_REGION or the profile only, so AWS_REGION
    (what the AWS SDKs for other languages and EKS set) is used when it found none."""
    session = boto3.session.Session()
    region = session.region_name or environ.get("AWS_REGION") or None
    try:
        return (session.client("ec2", region_name=region, config=EC2_CONFIG),
                session.client("cloudwatch", region_name=region, config=CLOUDWATCH_CONFIG))
    except BotoCoreError as err:
        raise SettingsError(f"AWS_REGION: boto3 could not make a client: {err}") from None


async def serve(settings: Settings, ec2: Any, cloudwatch: Any, environ: Mapping[str, str]) -> int:
    core_api = await kubernetes_api(environ) if settings.watch_pods else None
    activator = Activator(settings, ec2, cloudwatch, core_api)
    try:
        url = await activator.start()
    except OSError as err:  # the host does not resolve or is not ours, the port is taken or privileged
        reason = " ".join(str(err.strerror or err).split())
        print(f"activator: ACTIVATOR_HOST/ACTIVATOR_PORT: cannot listen on ACTIVATOR_HOST={settings.host!r} "
              f"ACTIVATOR_PORT={settings.port}: {reason}", file=sys.stderr)
        if core_api is not None:
            await core_api.api_client.close()
        return 2
    log.info("listening on %s; backend %s; workers %s; hold %gs; pod watch %s", url, settings.backend,
             ",".join(settings.instance_ids), settings.hold_seconds, "on" if core_api else "off")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: no new connections; in-flight requests get %gs", settings.shutdown_seconds)
    await activator.stop()
    if core_api is not None:
        await core_api.api_client.close()
    log.info("stopped")
    return 0


def main(environ: Optional[Mapping[str, str]] = None) -> int:
    try:
        environ = os.environ if environ is None else environ
        settings = from_env(environ)
        ec2, cloudwatch = aws_clients(environ)
    except SettingsError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(settings, ec2, cloudwatch, environ))
    except SettingsError as err:
        print(f"activator: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
