# Dockerfile — corogate on Debian 12: build in one stage, run in a slim one.
#
#   docker build -t corogate .
#   docker run --rm -p 8000:8000 -v $PWD/my.ini:/etc/corogate/corogate.ini:ro \
#       --stop-timeout 40 corogate
#
# The build dumps the BPF type header from the build host's kernel BTF
# (/sys/kernel/btf/vmlinux): the objects are CO-RE and load on other kernels. In the
# container the eBPF probes need CAP_BPF and CAP_PERFMON (--cap-add); without them
# corogate logs that they are off and runs on.
FROM debian:12 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc make pkg-config libc6-dev libuv1-dev node-llhttp libwslay-dev libinih-dev \
        systemtap-sdt-dev libbpf-dev bpftool clang llvm libelf-dev zlib1g-dev libssl-dev \
        liburing-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make build/corogate build/corogate-loadgen \
    && make install-bin DESTDIR=/out

FROM debian:12-slim
# Runtime libraries only (llhttp is compiled in); socat for the health check.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libuv1 libwslay1 libinih1 libbpf1 libelf1 zlib1g libssl3 liburing2 socat \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin corogate \
    && install -d -o corogate -g corogate -m 0750 /run/corogate
COPY --from=build /out/ /
COPY conf/corogate.ini /etc/corogate/corogate.ini
# In a container the listener faces the container's network, not its loopback; the stats
# socket goes where the health check looks. The image refuses to build on a bad config.
RUN sed -i -e 's/^bind = 127.0.0.1:8000/bind = 0.0.0.0:8000/' \
           -e 's|^stats_socket = .*|stats_socket = /run/corogate/stats.sock|' \
           /etc/corogate/corogate.ini \
    && /usr/sbin/corogate -t -c /etc/corogate/corogate.ini
USER corogate
EXPOSE 8000
# SIGTERM drains (drain_timeout, 30 s by default): give `docker stop` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD echo "show info" | socat -t2 - UNIX-CONNECT:/run/corogate/stats.sock \
        | grep -q '^name: corogate'
ENTRYPOINT ["/usr/sbin/corogate"]
CMD ["-c", "/etc/corogate/corogate.ini"]
