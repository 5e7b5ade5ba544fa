"""The node agent's room (work in progress for node integration): what it writes on a
node so that the kubelet's pulls resolve and trust a Berth registry."""
