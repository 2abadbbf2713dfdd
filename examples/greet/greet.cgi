#!/bin/sh
# The stand-in for the seed's eduard2diaz/greet:storage (not public): answers with the pod's name and a
# visit counter kept in /data, so each replica counts its own visitors.
n=$(cat /data/visits 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /data/visits
printf 'Content-Type: text/plain\r\n\r\n'
echo "Hello from $(hostname)! Visits: $n"
