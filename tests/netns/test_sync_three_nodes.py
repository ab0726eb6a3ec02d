"""Beyond C: three FTFW nodes on one multicast group converge (per-peer receive state).

C keeps a single ``last_seq_recv`` for all senders, so with a third node each node's
messages look like gaps or "before" (dropped) relative to the others'.  Here flows created
on each node must appear in the other two nodes' external caches, with no message
dropped as BEFORE; a restarted node (HELLO, StartupResync) gets everything back and its
new flows reach the others.
"""

from __future__ import annotations

import pytest

from tests.netns.sync_mesh import C_CONNTRACK, Mesh, Node, counter, create, flow_key, ns, wait_for

pytestmark = [pytest.mark.root]

K = 3  # flows per node


def expected(nodes: list[Node], me: Node, ks=range(K)) -> set[str]:
    return {flow_key(n.i, k) for n in nodes if n is not me for k in ks}


def test_three_nodes_converge_and_recover_after_restart(tmp_path):
    with Mesh() as mesh:
        nodes = []
        try:
            for i in (1, 2, 3):
                mesh.add(i)
                nodes.append(Node(tmp_path, i))
            for n in nodes:
                n.start()
            for n in nodes:
                for k in range(K):
                    create(n, k)
            for n in nodes:
                want = expected(nodes, n)
                wait_for(lambda n=n, want=want: n.external() == want, 15, f"node {n.i} has the others' flows",
                         show=lambda n=n: f"{sorted(n.external())}\n{n.logs()[-2000:]}")
            for n in nodes:
                net = n.network()
                assert counter(net, "Packets before") == 0, net
                assert counter(net, "Malformed messages") == 0, net
            # restart node 2: StartupResync + HELLO; it gets everything back, the others accept its
            # new sequence numbers and its new flows
            n2 = nodes[1]
            n2.stop()
            n2.start()
            create(n2, K)
            create(nodes[0], K)
            wait_for(lambda: n2.external() == expected(nodes, n2) | {flow_key(1, K)}, 15,
                     "restarted node 2 recovered", show=lambda: f"{sorted(n2.external())}\n{n2.logs()[-2000:]}")
            for n in (nodes[0], nodes[2]):
                want = expected(nodes, n) | {flow_key(2, K)} | ({flow_key(1, K)} if n is nodes[2] else set())
                wait_for(lambda n=n, want=want: n.external() == want, 15, f"node {n.i} after the restart",
                         show=lambda n=n: f"{sorted(n.external())}\n{n.logs()[-2000:]}")
            # a destroy on node 3 leaves both other caches
            r = ns(nodes[2].ns, C_CONNTRACK, "-D", "-p", "udp", "-s", "192.0.3.0")
            assert r.returncode == 0, r.stderr
            for n in nodes[:2]:
                wait_for(lambda n=n: flow_key(3, 0) not in n.external(), 10, f"destroy reached node {n.i}")
        finally:
            for n in nodes:
                n.stop()
