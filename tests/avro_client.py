#!/usr/bin/env python3
"""Avro records with confluent-kafka's own serializers, for tests/avro.rs.

usage: avro_client.py BROKER REGISTRY_URL produce TOPIC
       avro_client.py BROKER REGISTRY_URL register SUBJECT
       avro_client.py BROKER REGISTRY_URL consume TOPIC N

produce: two records for type avro.greeting: in binary mode (ce_ headers, content-type
avro/binary, the value is `data` as Avro) and in structured mode (the whole CloudEvent as one
Avro record, no content type). register: GREETING under SUBJECT. consume: N records from the
start, each printed as {"value": <Avro value as JSON>, "headers": {...}}, one per line.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

GREETING = json.dumps({"type": "record", "name": "Greeting", "fields": [
    {"name": "name", "type": "string"}, {"name": "age", "type": "int"}]})
EVENT = json.dumps({"type": "record", "name": "GreetingEvent", "fields": [
    {"name": "specversion", "type": "string"}, {"name": "type", "type": "string"},
    {"name": "source", "type": "string"}, {"name": "id", "type": "string"},
    {"name": "data", "type": {"type": "record", "name": "Data", "fields": [
        {"name": "name", "type": "string"}, {"name": "age", "type": "int"}]}}]})

broker, registry_url, cmd = sys.argv[1:4]
registry = SchemaRegistryClient({"url": registry_url})

if cmd == "register":
    print(registry.register_schema(sys.argv[4], Schema(GREETING, "AVRO")))
elif cmd == "produce":
    topic = sys.argv[4]
    p = Producer({"bootstrap.servers": broker})
    ctx = SerializationContext(topic, MessageField.VALUE)
    data = AvroSerializer(registry, GREETING)({"name": "bin", "age": 1}, ctx)
    p.produce(topic, data, key=b"k1", headers=[
        ("ce_specversion", b"1.0"), ("ce_type", b"avro.greeting"), ("ce_source", b"/avro-test"),
        ("ce_id", b"a1"), ("content-type", b"avro/binary")])
    whole = AvroSerializer(registry, EVENT, conf={"auto.register.schemas": True,
                                                   "subject.name.strategy": lambda c, n: "greeting-event"})(
        {"specversion": "1.0", "type": "avro.greeting", "source": "/avro-test", "id": "a2",
         "data": {"name": "structured", "age": 2}}, ctx)
    p.produce(topic, whole, key=b"k2")
    p.flush(10)
    print("ok")
elif cmd == "consume":
    topic, n = sys.argv[4], int(sys.argv[5])
    c = Consumer({"bootstrap.servers": broker, "group.id": f"avro-test-{time.time()}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    de = AvroDeserializer(registry)
    got, deadline = 0, time.time() + 20
    while got < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        value = de(m.value(), SerializationContext(topic, MessageField.VALUE))
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        print(json.dumps({"value": value, "headers": headers}), flush=True)
        got += 1
    c.close()
