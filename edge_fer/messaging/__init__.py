"""What goes out: the message documents, the MQTT connection and the publisher."""
