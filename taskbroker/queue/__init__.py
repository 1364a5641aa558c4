"""The queue adapter: one small interface, a RabbitMQ implementation and an embedded one."""

from taskbroker.queue.base import Delivery, QueueBroker, QueueStats, Subscription

__all__ = ["Delivery", "QueueBroker", "QueueStats", "Subscription"]
