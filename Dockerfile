# Dockerfile — corogate on Debian 12: build in one stage, run in a slim one.
FROM debian:12 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc make pkg-config libc6-dev libuv1-dev node-llhttp libwslay-dev libinih-dev \
        systemtap-sdt-dev libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make build/corogate build/corogate-loadgen \
    && make install-bin DESTDIR=/out

FROM debian:12-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libuv1 libwslay1 libinih1 libbpf1 libelf1 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin corogate
COPY --from=build /out/ /
COPY conf/corogate.ini /etc/corogate/corogate.ini
# In a container the listener must face the container network, not its loopback.
RUN sed -i "s/^bind = 127.0.0.1:8000/bind = 0.0.0.0:8000/" /etc/corogate/corogate.ini
USER corogate
EXPOSE 8000
ENTRYPOINT ["/usr/sbin/corogate"]
CMD ["-c", "/etc/corogate/corogate.ini"]
