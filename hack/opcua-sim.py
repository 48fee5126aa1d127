#!/usr/bin/env python3
"""A simulated OPC UA thermostat for the opcua mapper's tests and for trying it by hand.

A real OPC UA server (Python asyncua, an implementation independent of ours, as upstream's own
device simulator uses) with one namespace ("urn:kubeedge:opcua-sim:thermostat", index 2) and string node ids:

  ns=2;s=Temperature  Double   a slow wave around 21.5, changing every 200 ms (read-only)
  ns=2;s=Setpoint     Double   22.0, writable
  ns=2;s=Switch       Boolean  false, writable
  ns=2;s=Ratio        Float    0.25, writable
  ns=2;s=Counter      Int32    +1 every 100 ms (read-only)
  ns=2;s=Small        Byte     7, writable
  ns=2;s=Label        String   "thermostat-1", writable

Every value a client writes is printed as `written <name> <value>`, every Read of Temperature
or Counter as `read <name>` (subscriptions are not Reads); `ready <url>` is printed once the
server listens. With --security basic256sha256 the server offers only
Basic256Sha256 SignAndEncrypt and accepts only the client certificate in --certs (generated
there with the server's on first use: server-cert.der, server-key.pem, client-cert.der,
client-key.pem); with --user NAME:PASSWORD it accepts only that user (anonymous is refused).

Usage: hack/opcua-sim.py --port 4840 [--security none|basic256sha256] [--certs DIR] [--user u:p]
"""

import argparse
import asyncio
import logging
import math
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
import ipaddress

NAMESPACE = "urn:kubeedge:opcua-sim:thermostat"
SERVER_URI = "urn:kubeedge:opcua-sim"
CLIENT_URI = "urn:kubeedge:opcua-mapper"


def make_pair(directory: Path, name: str, uri: str, usage) -> None:
    """Writes {name}-cert.der and {name}-key.pem unless both exist."""
    cert_file, key_file = directory / f"{name}-cert.der", directory / f"{name}-key.pem"
    if cert_file.is_file() and key_file.is_file():
        return
    key = cert_gen.generate_private_key()
    alt = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(key, uri, {}, alt, extended=[usage], days=30)
    key_file.write_bytes(cert_gen.dump_private_key_as_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.DER))


class OneUser:
    """Accepts exactly one user name and password."""

    def __init__(self, name: str, password: str):
        self.name, self.password = name, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.name and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--security", choices=["none", "basic256sha256"], default="none")
    parser.add_argument("--certs", type=Path, help="directory for the server and client certificates")
    parser.add_argument("--user", help="NAME:PASSWORD, the only user accepted")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    user_manager = None
    if args.user:
        name, _, password = args.user.partition(":")
        user_manager = OneUser(name, password)
    server = Server(user_manager=user_manager)
    await server.init()
    url = f"opc.tcp://{args.host}:{args.port}/kubeedge/sim/"
    server.set_endpoint(url)
    server.set_server_name("KubeEdge OPC UA simulator")
    await server.set_application_uri(SERVER_URI)
    if args.user:
        server.set_security_IDs(["Username"])
    if args.security == "basic256sha256":
        if args.certs is None:
            sys.exit("--security basic256sha256 needs --certs DIR")
        args.certs.mkdir(parents=True, exist_ok=True)
        make_pair(args.certs, "server", SERVER_URI, ExtendedKeyUsageOID.SERVER_AUTH)
        make_pair(args.certs, "client", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
        await server.load_certificate(str(args.certs / "server-cert.der"))
        await server.load_private_key(str(args.certs / "server-key.pem"))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        trusted = (args.certs / "client-cert.der").read_bytes()

        async def only_our_client(cert: x509.Certificate, _app) -> None:
            if cert.public_bytes(serialization.Encoding.DER) != trusted:
                print("rejected a client certificate", flush=True)
                raise ua.uaerrors.BadCertificateUntrusted()

        server.set_certificate_validator(only_our_client)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])

    idx = await server.register_namespace(NAMESPACE)
    thermostat = await server.nodes.objects.add_object(ua.NodeId("Thermostat", idx), "Thermostat")

    async def var(name, value, vtype, writable):
        node = await thermostat.add_variable(ua.NodeId(name, idx), name, ua.Variant(value, vtype))
        if writable:
            await node.set_writable()
        return node

    temperature = await var("Temperature", 21.5, ua.VariantType.Double, False)
    await var("Setpoint", 22.0, ua.VariantType.Double, True)
    await var("Switch", False, ua.VariantType.Boolean, True)
    await var("Ratio", 0.25, ua.VariantType.Float, True)
    counter = await var("Counter", 0, ua.VariantType.Int32, False)
    await var("Small", 7, ua.VariantType.Byte, True)
    await var("Label", "thermostat-1", ua.VariantType.String, True)

    names = {}
    for name in ("Setpoint", "Switch", "Ratio", "Small", "Label"):
        names[ua.NodeId(name, idx)] = name

    async def on_write(event, _dispatcher):
        for request in event.request_params.NodesToWrite:
            name = names.get(request.NodeId)
            if name is not None:
                print(f"written {name} {request.Value.Value.Value}", flush=True)

    watched = {ua.NodeId("Temperature", idx): "Temperature", ua.NodeId("Counter", idx): "Counter"}

    async def on_read(event, _dispatcher):
        for request in event.request_params.NodesToRead:
            name = watched.get(request.NodeId)
            if name is not None and request.AttributeId == ua.AttributeIds.Value:
                print(f"read {name}", flush=True)

    await server.start()
    server.subscribe_server_callback(CallbackType.PostWrite, on_write)
    server.subscribe_server_callback(CallbackType.PreRead, on_read)
    print(f"ready {url}", flush=True)
    tick = 0
    while True:
        await asyncio.sleep(0.1)
        tick += 1
        await counter.write_value(ua.Variant(tick, ua.VariantType.Int32))
        if tick % 2 == 0:
            wave = 21.5 + round(math.sin(tick / 50.0), 2)
            await temperature.write_value(ua.Variant(wave, ua.VariantType.Double))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
