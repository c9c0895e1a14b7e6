"""Transports that deliver drops to partners."""

from exchange.transport.base import Delivery, Transport
from exchange.transport.sftp import SftpTransport

__all__ = ["Delivery", "SftpTransport", "Transport"]
