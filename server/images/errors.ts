/** An image build failure a user can act on: which input is at fault and why. */
export class ImageError extends Error {
  constructor(message: string, public field: string | null = null) {
    super(message);
    this.name = 'ImageError';
  }
}
