"""The machinery every technique family shares: hooks, layers, progress, checks, devices, caches.

Addressed by module (``from vizcore.core.hooks import capture_activations``): importing this
package imports none of them, so ``vizcore.core.offline`` stays cheap.
"""
