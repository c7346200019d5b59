# Build and runtime image for livequeryd (Debian 12, as the project targets).
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
    libwebsockets-dev libhiredis-dev libjansson-dev libpcre2-dev libssl-dev libuv1-dev liburing-dev uthash-dev \
    libmongoc-dev libbson-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF && cmake --build /build -j

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libwebsockets17 libhiredis0.14 \
    libjansson4 libpcre2-8-0 libuv1 liburing2 libwebsockets-evlib-uv libmongoc-1.0-0 libbson-1.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/livequeryd /usr/local/bin/livequeryd
USER nobody
EXPOSE 1337
ENTRYPOINT []
CMD ["livequeryd", "--help"]
