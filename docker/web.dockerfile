# The web UI for the production set-up: built with Node, served by nginx, which also proxies /api (REST and
# WebSockets) to the API server. Build from the repository root:
#   docker build -f docker/web.dockerfile -t aieval-web .
#   docker run -p 8080:80 -e AIEVAL_API_UPSTREAM=api:8000 aieval-web
# The typed API client is committed (apps/web/src/api), so this build needs no Python.

FROM node:20-bookworm-slim AS build
WORKDIR /web
COPY apps/web/package.json apps/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY apps/web/ ./
RUN npm run build

FROM nginx:1.27-alpine
# nginx's entrypoint renders /etc/nginx/templates/*.template with the environment into conf.d/.
# AIEVAL_MAX_UPLOAD: the server's max_upload_bytes (50 MiB by default) and room for the form around the file.
ENV AIEVAL_API_UPSTREAM=api:8000 \
    AIEVAL_MAX_UPLOAD=60m \
    AIEVAL_WEB_ROOT=/usr/share/nginx/html
# The one Nginx configuration (scripts/deploy.sh installs the same file on a host).
COPY configs/deploy/nginx.conf /etc/nginx/templates/default.conf.template
COPY --from=build /web/dist /usr/share/nginx/html
EXPOSE 80
HEALTHCHECK --interval=30s --timeout=3s CMD wget -qO- http://127.0.0.1/healthz || exit 1
