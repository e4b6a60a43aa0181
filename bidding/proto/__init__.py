"""Protocol Buffers definitions.

The generated modules beside each `.proto` are not committed: `bidding.grpc_stubs` builds them.
"""
