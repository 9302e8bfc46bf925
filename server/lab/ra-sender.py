#!/usr/bin/python3
"""Minimal IPv6 router advertisement sender for the ironboot lab (python3 standard library only).

iPXE's autoboot waits ~13 s for IPv6 autoconfiguration when no router advertises itself on the link. This
sends an RA with router lifetime 0 (not a default router), no prefix and no M/O flags ("no DHCPv6"), which
completes iPXE's IPv6 configuration at once. It answers router solicitations and repeats every INTERVAL s.
Node has no raw sockets, hence Python. Runs inside the lab namespace until SIGTERM.

usage: ra-sender.py INTERFACE [INTERVAL]
"""
import os, select, signal, socket, struct, sys, time

ifname = sys.argv[1]
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
ALL_NODES = 'ff02::1'
RS, RA = 133, 134


def mac_of(ifname):
    with open(f'/sys/class/net/{ifname}/address') as f:
        return bytes.fromhex(f.read().strip().replace(':', ''))


def ra_packet():
    # type, code, checksum (kernel fills it for ICMPv6 raw sockets), cur hop limit, flags, router lifetime,
    # reachable time, retrans timer; then option 1 (source link-layer address, 8 bytes)
    return struct.pack('!BBHBBHII', RA, 0, 0, 64, 0, 0, 0, 0) + struct.pack('!BB', 1, 1) + mac_of(ifname)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
# receive router solicitations: join ff02::2 (all routers)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, 'ff02::2') + struct.pack('@I', idx))
try:
    s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())  # SO_BINDTODEVICE
except OSError:
    pass
print(f'ra-sender: advertising on {ifname} (index {idx}) every {interval:g} s and on solicitation', flush=True)


def send(reason):
    try:
        s.sendto(ra_packet(), (ALL_NODES, 0, 0, idx))
        if reason != 'periodic':
            print(f'ra-sender: RA sent ({reason})', flush=True)
    except OSError as e:  # no link-local address yet (bridge without carrier): try again later
        if reason != 'periodic':
            print(f'ra-sender: send failed ({reason}): {e}', flush=True)


next_at = 0.0
while True:
    now = time.monotonic()
    if now >= next_at:
        send('periodic')
        next_at = now + interval
    r, _, _ = select.select([s], [], [], max(0.0, next_at - now))
    if r:
        data, addr = s.recvfrom(1500)
        if data and data[0] == RS:
            send(f'solicited by {addr[0]}')
