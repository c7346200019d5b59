# livequeryd: build on Debian 12, run on debian:12-slim with only the runtime libraries.
#   docker build -t livequeryd .
#   docker run --rm -p 1337:1337 -e LIVEQUERY_APP_ID=bookstore -e LIVEQUERY_REDIS_URL=redis://redis:6379 livequeryd
# Settings come from LIVEQUERY_* variables (livequeryd --help lists them) or a
# file mounted at /etc/livequeryd/livequeryd.conf with LIVEQUERY_CONFIG pointing at it.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
    libwebsockets-dev libhiredis-dev libjansson-dev libpcre2-dev libssl-dev libuv1-dev liburing-dev uthash-dev \
    libmongoc-dev libbson-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include include
COPY src src
COPY web web
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DLQ_WEB_ROOT=/usr/share/livequeryd/web \
    && cmake --build /build -j \
    && DESTDIR=/out cmake --install /build --prefix /usr

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libwebsockets17 libwebsockets-evlib-uv \
    libhiredis0.14 libjansson4 libpcre2-8-0 libuv1 liburing2 libmongoc-1.0-0 libbson-1.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/usr/bin/livequeryd /usr/bin/livequeryd
COPY --from=build /out/usr/share/livequeryd /usr/share/livequeryd
# In a container the port must be reachable from outside it; everything else
# keeps its safe default (limits on, no master key, every Origin allowed).
# MONGOC_DISABLE_SHM: libmongoc's counters stay in the process (no /dev/shm file, no warning at start)
ENV LIVEQUERY_HOST=0.0.0.0 LIVEQUERY_LOG_FORMAT=json MONGOC_DISABLE_SHM=1
USER nobody
EXPOSE 1337
STOPSIGNAL SIGTERM
# /ready: 200 when Redis (and MongoDB, if configured) are reachable and not draining
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${LIVEQUERY_PORT:-1337} && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["livequeryd"]
