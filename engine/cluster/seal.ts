// What a group keeps in NATS of its partitions' state (checkpoints, round partials) is encrypted when
// the state dir is: AES-256-GCM under the state's key, laid out as IV, tag, ciphertext.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** The bytes as they leave: encrypted under `key` (32 bytes) when there is one, as they are otherwise. */
export function seal(plain: Uint8Array, key: string | undefined): Buffer {
  if (key === undefined) return Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", Buffer.from(key), iv);
  const sealed = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), sealed]);
}

/** The bytes `seal` made, as they were. */
export function unseal(bytes: Buffer, key: string | undefined): Buffer {
  if (key === undefined) return bytes;
  const decipher = createDecipheriv("aes-256-gcm", Buffer.from(key), bytes.subarray(0, IV_BYTES));
  decipher.setAuthTag(bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
}
