"""RabbitMQ: the topology the catalog declares, and the bus the services use."""
