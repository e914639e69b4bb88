// Task events for containerd (Kubernetes learns exits only from them): each
// goes, in the order published, to containerd's ttrpc events service
// (Events/Forward on $TTRPC_ADDRESS), retried 5 times over a new connection
// if one fails.
import { create, toBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { EmptySchema, timestampNow } from '@bufbuild/protobuf/wkt';
import { ForwardRequestSchema } from './gen/forward_pb.js';
import { TtrpcClient } from './ttrpc.js';

const SERVICE = 'containerd.services.events.ttrpc.v1.Events';
const RETRIES = 5;

export interface Logger {
  warn(obj: object, msg: string): void;
}

export class EventPublisher {
  private client: TtrpcClient | undefined;
  private readonly queue: { namespace: string; topic: string; typeUrl: string; value: Uint8Array }[] = [];
  private sending = false;
  /** Resolves when the queue is empty (tests, shutdown). */
  private idle: (() => void)[] = [];

  constructor(private readonly address: string, private readonly log: Logger) {}

  publish<T extends DescMessage>(namespace: string, topic: string, schema: T, event: MessageInitShape<T>): void {
    // The type URL is the bare message name, as containerd's typeurl registry writes it.
    this.queue.push({ namespace, topic, typeUrl: schema.typeName, value: toBinary(schema, create(schema, event)) });
    if (!this.sending) void this.drain();
  }

  flushed(): Promise<void> {
    if (!this.sending && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private async drain(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0) {
      const ev = this.queue[0]!;
      for (let attempt = 1; ; attempt++) {
        try {
          if (!this.client || this.client.isClosed) this.client = await TtrpcClient.connect(this.address);
          await this.client.call(SERVICE, 'Forward', ForwardRequestSchema, {
            envelope: { timestamp: timestampNow(), namespace: ev.namespace, topic: ev.topic, event: { typeUrl: ev.typeUrl, value: ev.value } },
          }, EmptySchema);
          break;
        } catch (err) {
          this.client?.close();
          this.client = undefined;
          if (attempt >= RETRIES) {
            this.log.warn({ topic: ev.topic, namespace: ev.namespace, err: (err as Error).message }, 'event dropped after 5 attempts');
            break;
          }
          await new Promise((r) => setTimeout(r, 50 * attempt));
        }
      }
      this.queue.shift();
    }
    this.sending = false;
    for (const r of this.idle.splice(0)) r();
  }

  close(): void {
    this.client?.close();
  }
}
