// The job's HTTP server over two threads, as `flusso run` runs it: the command's main thread holds the
// sockets and parses HTTP, and forwards each request to the job's thread, which answers it with the
// routes (reading the job between two steps) through a stand-in response. Socket writes and HTTP
// parsing, most of what a query costs, so leave the job's thread.
import { EventEmitter } from "node:events";
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { listen, type HttpServer } from "./server.ts";

/** From the main thread to the job's: a request to answer, or a client gone before its answer ended. */
export type ForwardedRequest = { type: "http-request"; id: number; method: string; url: string; authorization?: string } | { type: "http-close"; id: number };

/** From the job's thread to the main thread: the next part of the answer to request `id`. */
export type ForwardedReply = {
  type: "http-reply";
  id: number;
  head?: { status: number; headers: OutgoingHttpHeaders };
  chunk?: string | Uint8Array;
  end?: boolean;
  destroy?: boolean;
};

/** A reader of a stream (server-sent events) that leaves this much unread is let go. */
const MAX_UNREAD_BYTES = 4 * 1024 * 1024;

/**
 * The job's side: answers each forwarded request with `handle` (server.ts's requestHandler) writing to
 * a stand-in response that sends its parts back. Returns what takes the main thread's messages.
 */
export function answerForwarded(handle: (request: IncomingMessage, response: ServerResponse) => void, send: (reply: ForwardedReply) => void): (message: ForwardedRequest) => void {
  const open = new Map<number, ForwardedResponse>();
  return (message) => {
    if (message.type === "http-close") {
      open.get(message.id)?.clientGone();
      open.delete(message.id);
      return;
    }
    const response = new ForwardedResponse(message.id, send, () => open.delete(message.id));
    open.set(message.id, response);
    const headers = message.authorization === undefined ? {} : { authorization: message.authorization };
    handle({ method: message.method, url: message.url, headers } as IncomingMessage, response as unknown as ServerResponse);
  };
}

/** As much of node:http's ServerResponse as the routes use, sending what is written to the main thread. */
class ForwardedResponse extends EventEmitter {
  headersSent = false;
  writableEnded = false;
  /** The main thread lets a slow reader go (MAX_UNREAD_BYTES): nothing waits here. */
  readonly writableLength = 0;
  private head?: ForwardedReply["head"];

  constructor(
    private readonly id: number,
    private readonly send: (reply: ForwardedReply) => void,
    private readonly onDone: () => void,
  ) {
    super();
  }

  writeHead(status: number, headers: OutgoingHttpHeaders = {}): this {
    this.head = { status, headers };
    this.headersSent = true;
    return this;
  }

  write(chunk: string | Uint8Array): boolean {
    if (!this.writableEnded) this.sendPart({ chunk });
    return true;
  }

  end(chunk?: string | Uint8Array): this {
    if (this.writableEnded) return this;
    this.sendPart(chunk === undefined ? { end: true } : { chunk, end: true });
    this.finish();
    return this;
  }

  destroy(): this {
    if (this.writableEnded) return this;
    this.send({ type: "http-reply", id: this.id, destroy: true });
    this.finish();
    return this;
  }

  /** The client went away before the answer ended. */
  clientGone(): void {
    if (!this.writableEnded) this.finish();
  }

  private finish(): void {
    this.writableEnded = true;
    this.onDone();
    this.emit("close");
  }

  /** The head goes with the first part: a whole answer is one message. */
  private sendPart(part: Pick<ForwardedReply, "chunk" | "end">): void {
    const head = this.head;
    this.head = undefined;
    this.send({ type: "http-reply", id: this.id, ...(head === undefined ? {} : { head }), ...part });
  }
}

/**
 * The main thread's side: listens on host:port and forwards every request with `forward`; `reply`
 * takes the job's answers. Closing drops open connections.
 */
export async function forwardingServer(address: { host: string; port: number }, forward: (request: ForwardedRequest) => void): Promise<HttpServer & { reply(reply: ForwardedReply): void }> {
  const open = new Map<number, ServerResponse>();
  let nextId = 0;
  const server = await listen(address, (request, response) => {
    const id = ++nextId;
    open.set(id, response);
    response.on("close", () => {
      if (open.delete(id)) forward({ type: "http-close", id });
    });
    const authorization = request.headers.authorization;
    forward({ type: "http-request", id, method: request.method ?? "GET", url: request.url ?? "/", ...(authorization === undefined ? {} : { authorization }) });
  });
  return {
    ...server,
    reply({ id, head, chunk, end, destroy }) {
      const response = open.get(id);
      if (response === undefined) return;
      if (head !== undefined) response.writeHead(head.status, head.headers);
      if (destroy) {
        open.delete(id);
        response.destroy();
        return;
      }
      if (chunk !== undefined) response.write(chunk);
      if (end) {
        open.delete(id);
        response.end();
      } else if (response.writableLength > MAX_UNREAD_BYTES) {
        open.delete(id);
        response.destroy();
        forward({ type: "http-close", id });
      }
    },
  };
}
